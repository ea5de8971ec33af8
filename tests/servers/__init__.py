"""Real servers for the tests and benchmarks: a Kafka container, an S3 server, a schema
registry. Not part of the installed product."""
