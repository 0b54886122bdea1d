"""Trust layer: the exchange's signing keys, the SMART token endpoint, access
tokens, scopes, and the dependency that turns a bearer token into a caller."""
