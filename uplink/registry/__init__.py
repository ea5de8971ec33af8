"""The schema registry's client (client.py). The tests' Apicurio Registry is in tests/servers."""
