"""The operator's library: dead letters, the quarantine, a push's path, a conversation.

Plain classes and functions returning values, read by time (offsets-for-times) from any cluster
the settings name; the ``uplink`` command's verbs (uplink/cli/operate.py) print them, and a web
console can call the same.
"""
