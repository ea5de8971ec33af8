"""The schema registry: its client (client.py) and a local Apicurio Registry (local.py)."""
