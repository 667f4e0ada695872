#!/usr/bin/env sh
# The compose file's secrets, one file each under infra/compose/secrets/ (never committed; the
# folder 0700, its files 0644 because compose mounts them with their modes and the containers run
# as their own users): database and admin passwords, MLflow's CSRF key, the Prefect API's auth
# string, the object store's root and MLflow's scoped keys, and Dask's certificate authority with a server
# certificate (scheduler and workers) and a client certificate (only the Prefect worker, which runs
# chorus). An existing file is kept; delete the folder to rotate everything.
#   sh infra/compose/make-secrets.sh && docker compose -f infra/compose/compose.yaml up -d
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
cd secrets
random() { [ -s "$1" ] || openssl rand -hex 24 > "$1"; }
for name in prefect_db_password mlflow_db_password mlflow_admin_password mlflow_flask_key s3_root_password \
            mlflow_s3_secret_key prefect_api_password; do
  random "$name"
done
[ -s s3_root_user ] || echo "chorus-root-$(openssl rand -hex 4)" > s3_root_user
[ -s mlflow_s3_access_key ] || echo "mlflow-$(openssl rand -hex 6)" > mlflow_s3_access_key
[ -s prefect_api_auth_string ] || echo "chorus:$(cat prefect_api_password)" > prefect_api_auth_string
if [ ! -s dask_ca.pem ]; then
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
  key dask_ca.key
  openssl req -x509 -new -key dask_ca.key -sha256 -days 825 -subj "/CN=chorus dask CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -out dask_ca.pem
  # the scheduler and workers: servers, and clients of each other (a worker connects to the scheduler)
  key dask_node.key
  openssl req -new -key dask_node.key -subj "/CN=chorus dask node" -out dask_node.csr
  printf 'subjectAltName=DNS:dask-scheduler,DNS:dask-worker,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > node.ext
  openssl x509 -req -in dask_node.csr -CA dask_ca.pem -CAkey dask_ca.key -CAcreateserial -days 825 -sha256 \
    -extfile node.ext -out dask_node.pem
  # chorus's client: clientAuth only, so it cannot stand in for the scheduler or a worker
  key dask_client.key
  openssl req -new -key dask_client.key -subj "/CN=chorus dask client" -out dask_client.csr
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl x509 -req -in dask_client.csr -CA dask_ca.pem -CAkey dask_ca.key -CAcreateserial -days 825 -sha256 \
    -extfile client.ext -out dask_client.pem
  rm -f dask_ca.key ./*.csr ./*.ext dask_ca.srl  # no key of the CA is kept: a new certificate means a new CA
fi
chmod 644 ./*  # readable by the containers' own users where compose bind-mounts them; the folder is 0700
echo "secrets in $(pwd)"
