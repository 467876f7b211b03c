"""HTTP plumbing every route shares: the app's keys, body reading, error answers, connections,
the listener and door that refuse early, the server, the access log and page headers."""
