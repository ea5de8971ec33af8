"""S3-compatible object storage: where a storage URL points (settings), the bucket client, and
a local S3 server (versitygw) for tests and development."""
