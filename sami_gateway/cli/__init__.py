"""The command line: `serve`, `worker`, `token`, `jobs ...` and the namespaces' own commands."""
