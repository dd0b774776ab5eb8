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
