"""The router worker: each push to the topics and HTTP endpoints its rules name."""
