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
# migrator role the backend uses once at start-up for schema changes.
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
