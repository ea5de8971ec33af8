"""S3-compatible object storage: where a storage URL points (settings), the bucket client, and
the create-only puts the archive and the media store rely on."""
