"""Real servers on loopback for the tests: nginx (byte-range file server), PostgreSQL + pgstac,
stac-fastapi-pgstac, a fault-injecting proxy and a SAS token endpoint. Each starts on a free
port, lives in a temporary directory, and stops itself."""
