"""Who may call: Bearer tokens and appkey rules, quotas, access keys and the V4 signature GetToken checks."""
