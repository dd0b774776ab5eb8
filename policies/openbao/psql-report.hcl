# Policy "psql-report": the example CronJob (deploy/examples/psql-report),
# spiffe://demo.local/ns/zt-examples/sa/psql-report. A read-only database
# user, renewed and revoked by its own zt-sidecar; nothing else.
path "database/creds/report-reader" {
  capabilities = ["read"]
}
path "sys/leases/renew/database/creds/report-reader/*" {
  capabilities = ["update"]
}
path "sys/leases/revoke/database/creds/report-reader/*" {
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
