"""The media worker: fetch, verify and keep each media push's object, then announce it."""
