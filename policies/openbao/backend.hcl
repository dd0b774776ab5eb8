# Policy "backend": what the backend's zt-sidecar may do with the token it
# gets by logging in with the backend's JWT-SVID
# (spiffe://demo.local/ns/99-apps/sa/backend). Nothing else gets this policy.

# Per-user GitHub tokens: secret/data/github/users/<user_id>
path "secret/data/github/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "secret/metadata/github/*" {
  capabilities = ["read", "delete"]
}

# The backend's JWT signing key, rendered to a file by the sidecar.
path "secret/data/backend/*" {
  capabilities = ["read"]
}

# Dynamic PostgreSQL credentials: DML-only runtime role, and the short-lived
# migrator role the backend uses at start-up for schema changes (then releases:
# its sidecar revokes that lease and issues none again in the pod; README,
# "Why it is zero trust").
path "database/creds/backend-role" {
  capabilities = ["read"]
}
path "database/creds/backend-migrator" {
  capabilities = ["read"]
}

# Renew and revoke only leases of those two roles (lease id in the URL).
path "sys/leases/renew/database/creds/backend-role/*" {
  capabilities = ["update"]
}
path "sys/leases/renew/database/creds/backend-migrator/*" {
  capabilities = ["update"]
}
path "sys/leases/revoke/database/creds/backend-role/*" {
  capabilities = ["update"]
}
path "sys/leases/revoke/database/creds/backend-migrator/*" {
  capabilities = ["update"]
}

# The token's own upkeep. No `default` policy is attached (the jwt role sets
# token_no_default_policy): it would also allow renewing and looking up any
# lease by its id, cubbyhole and response wrapping.
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
