"""TLS for every listener: the fleet PKI, caller identities and reloading credentials."""
