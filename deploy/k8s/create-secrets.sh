#!/usr/bin/env bash
# Creates every Secret the platform reads, with generated values, without writing any value to disk or
# to the repository. Idempotent: an existing Secret is left untouched, and values shared between
# namespaces are read back from whichever Secret already holds them, so a re-run never rotates a
# password behind PostgreSQL's back. To rotate, delete the Secrets (and, for the dev database, its
# volume) and run again.
#
#   deploy/k8s/create-secrets.sh            # kind/minikube: dev PostgreSQL (TLS) and MinIO in platform-data
#
# Managed cluster: point at your services and bring one object-store key pair per identity (or leave them empty
# and use workload identity, see deploy/README.md):
#   PG_HOST=mydb.example.internal PG_SSLMODE=verify-full CREATE_DEV_SERVICES=0 S3_ENDPOINT_URL= \
#   S3_RUNS_ACCESS_KEY_ID=... S3_RUNS_SECRET_ACCESS_KEY=... S3_SENSORS_ACCESS_KEY_ID=... \
#   S3_SENSORS_SECRET_ACCESS_KEY=... S3_MLFLOW_ACCESS_KEY_ID=... S3_MLFLOW_SECRET_ACCESS_KEY=... \
#   deploy/k8s/create-secrets.sh
#
# Object-store identities (their bucket policies: deploy/k8s/dev/minio-identities.yaml). The MinIO root keys never
# leave platform-data: only MinIO and the Job that creates these users hold them.
#   platform-runs     run, step and Ray pods: asset store platform/ read/write, landing zone landing/ read
#   platform-sensors  code server (landing and retire sensors): landing/ and platform/ read, quarantine/ write
#   mlflow-artifacts  MLflow's artifact proxy: mlflow-artifacts/ read/write
#
# Secret                        namespace      keys                                      read by
# dagster-postgresql-secret     dagster        postgresql-password                       Dagster chart (DAGSTER_PG_PASSWORD), run pods
# ray-auth-token                dagster        auth_token                                KubeRay authOptions, Dagster pods (RAY_AUTH_TOKEN)
# mlflow-client-credentials     dagster        MLFLOW_TRACKING_USERNAME/_PASSWORD        code server and run pods (envSecrets)
# platform-object-store-sensors dagster        AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  code server (envSecrets): identity platform-sensors
# platform-object-store-runs    dagster        AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  run and step pods (run launcher env), Ray pods
#                                                                                          (resources/kuberay.py): platform-runs
# oauth2-proxy                  dagster        client-id, client-secret, cookie-secret   deploy/k8s/oauth2-proxy.yaml
# mlflow-server                 mlflow         backend-store-uri, admin-username,        MLflow server
#                                              admin-password, flask-secret-key
# mlflow-auth-config            mlflow         basic_auth.ini                            MLflow server (auth database URI)
# mlflow-platform-user          mlflow         username, password                        deploy/mlflow/bootstrap-user-job.yaml
# mlflow-object-store           mlflow         AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, MLflow server (artifact proxy): mlflow-artifacts
#                                              AWS_DEFAULT_REGION, MLFLOW_S3_ENDPOINT_URL
# postgres-superuser            platform-data  password                                  dev PostgreSQL (POSTGRES_PASSWORD)
# postgres-app-passwords        platform-data  dagster, mlflow                           dev PostgreSQL init script
# postgres-tls                  platform-data  tls.crt, tls.key                          dev PostgreSQL (self-signed, 825 days)
# minio-root                    platform-data  root-user, root-password                  dev MinIO, minio-setup Job
# minio-identities              platform-data  platform-runs, platform-sensors,          minio-setup Job (each user's secret key)
#                                              mlflow-artifacts
#
# The OIDC client of the sign-in proxy comes from your identity provider: OAUTH2_CLIENT_ID=... OAUTH2_CLIENT_SECRET=...
# (without them the oauth2-proxy Secret is not created and the writable UI stays unreachable from the ingress).
set -euo pipefail

PG_HOST="${PG_HOST:-postgres.platform-data.svc.cluster.local}"
PG_PORT="${PG_PORT:-5432}"
PG_SSLMODE="${PG_SSLMODE:-require}"
CREATE_DEV_SERVICES="${CREATE_DEV_SERVICES:-1}"
S3_ENDPOINT_URL="${S3_ENDPOINT_URL-http://minio.platform-data.svc.cluster.local:9000}"
case "$PG_SSLMODE" in
  require | verify-ca | verify-full) ;;
  *)
    echo "PG_SSLMODE=$PG_SSLMODE: PostgreSQL passwords and the event log would cross the network in clear;" \
      "use require, verify-ca or verify-full" >&2
    exit 1
    ;;
esac
WORKDIR="$(mktemp -d)"
trap 'rm -rf "$WORKDIR"' EXIT
S3_REGION="${S3_REGION:-us-east-1}"
MLFLOW_PLATFORM_USER="${MLFLOW_PLATFORM_USER:-dagster}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

random() { # 32 URL-safe characters
  LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32
}

exists() { # namespace name
  kubectl -n "$1" get secret "$2" >/dev/null 2>&1
}

read_key() { # namespace name key -> value, empty when absent
  if exists "$1" "$2"; then
    kubectl -n "$1" get secret "$2" -o "go-template={{ index .data \"$3\" | base64decode }}" 2>/dev/null || true
  fi
}

first_of() { # first non-empty argument, or a new random value
  for value in "$@"; do
    if [ -n "$value" ]; then printf '%s' "$value"; return; fi
  done
  random
}

create() { # namespace name --from-literal=... / --from-file=...
  local namespace="$1" name="$2"
  shift 2
  if exists "$namespace" "$name"; then
    echo "secret/$name in $namespace exists, left unchanged"
    return
  fi
  kubectl -n "$namespace" create secret generic "$name" "$@" \
    --dry-run=client -o yaml \
    | kubectl label --local -f - app.kubernetes.io/part-of=ml-asset-platform -o yaml \
    | kubectl apply -f - >/dev/null
  echo "secret/$name created in $namespace"
}

# Values shared across namespaces: reuse what exists, generate the rest once.
DAGSTER_DB_PASSWORD="$(first_of "$(read_key dagster dagster-postgresql-secret postgresql-password)" \
  "$(read_key platform-data postgres-app-passwords dagster)")"
MLFLOW_DB_PASSWORD="$(first_of "$(read_key platform-data postgres-app-passwords mlflow)")"
MINIO_ROOT_USER="$(first_of "$(read_key platform-data minio-root root-user)" "platform-admin")"
MINIO_ROOT_PASSWORD="$(first_of "$(read_key platform-data minio-root root-password)")"
if [ "$CREATE_DEV_SERVICES" = "1" ]; then
  # One MinIO user per identity; the access key is the user's name, the secret is generated once.
  RUNS_KEY_ID=platform-runs
  SENSORS_KEY_ID=platform-sensors
  MLFLOW_KEY_ID=mlflow-artifacts
  RUNS_SECRET="$(first_of "$(read_key dagster platform-object-store-runs AWS_SECRET_ACCESS_KEY)" \
    "$(read_key platform-data minio-identities platform-runs)")"
  SENSORS_SECRET="$(first_of "$(read_key dagster platform-object-store-sensors AWS_SECRET_ACCESS_KEY)" \
    "$(read_key platform-data minio-identities platform-sensors)")"
  MLFLOW_SECRET="$(first_of "$(read_key mlflow mlflow-object-store AWS_SECRET_ACCESS_KEY)" \
    "$(read_key platform-data minio-identities mlflow-artifacts)")"
else
  RUNS_KEY_ID="${S3_RUNS_ACCESS_KEY_ID:-}"
  RUNS_SECRET="${S3_RUNS_SECRET_ACCESS_KEY:-}"
  SENSORS_KEY_ID="${S3_SENSORS_ACCESS_KEY_ID:-}"
  SENSORS_SECRET="${S3_SENSORS_SECRET_ACCESS_KEY:-}"
  MLFLOW_KEY_ID="${S3_MLFLOW_ACCESS_KEY_ID:-}"
  MLFLOW_SECRET="${S3_MLFLOW_SECRET_ACCESS_KEY:-}"
fi
MLFLOW_USER_PASSWORD="$(first_of "$(read_key dagster mlflow-client-credentials MLFLOW_TRACKING_PASSWORD)" \
  "$(read_key mlflow mlflow-platform-user password)")"

kubectl apply -f "$SCRIPT_DIR/namespaces.yaml" >/dev/null

# --- dagster -----------------------------------------------------------------------------------------
create dagster dagster-postgresql-secret --from-literal=postgresql-password="$DAGSTER_DB_PASSWORD"
create dagster ray-auth-token --from-literal=auth_token="$(random)$(random)"
create dagster mlflow-client-credentials \
  --from-literal=MLFLOW_TRACKING_USERNAME="$MLFLOW_PLATFORM_USER" \
  --from-literal=MLFLOW_TRACKING_PASSWORD="$MLFLOW_USER_PASSWORD"
create dagster platform-object-store-sensors \
  --from-literal=AWS_ACCESS_KEY_ID="$SENSORS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$SENSORS_SECRET"
create dagster platform-object-store-runs \
  --from-literal=AWS_ACCESS_KEY_ID="$RUNS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$RUNS_SECRET"
if [ -n "${OAUTH2_CLIENT_ID:-}" ] && [ -n "${OAUTH2_CLIENT_SECRET:-}" ]; then
  create dagster oauth2-proxy \
    --from-literal=client-id="$OAUTH2_CLIENT_ID" \
    --from-literal=client-secret="$OAUTH2_CLIENT_SECRET" \
    --from-literal=cookie-secret="$(random)"
else
  echo "secret/oauth2-proxy not created: set OAUTH2_CLIENT_ID and OAUTH2_CLIENT_SECRET (your OIDC client) and rerun"
fi

# --- mlflow ------------------------------------------------------------------------------------------
create mlflow mlflow-server \
  --from-literal=backend-store-uri="postgresql://mlflow:${MLFLOW_DB_PASSWORD}@${PG_HOST}:${PG_PORT}/mlflow?sslmode=${PG_SSLMODE}" \
  --from-literal=admin-username=admin \
  --from-literal=admin-password="$(random)" \
  --from-literal=flask-secret-key="$(random)$(random)"
if ! exists mlflow mlflow-auth-config; then
  auth_ini="$WORKDIR/basic_auth.ini"
  sed -e "s|postgresql://mlflow:__MLFLOW_DB_PASSWORD__@postgres.platform-data.svc.cluster.local:5432/mlflow_auth|postgresql://mlflow:${MLFLOW_DB_PASSWORD}@${PG_HOST}:${PG_PORT}/mlflow_auth?sslmode=${PG_SSLMODE}|" \
    "$SCRIPT_DIR/../mlflow/basic_auth.ini.example" >"$auth_ini"
  create mlflow mlflow-auth-config --from-file=basic_auth.ini="$auth_ini"
else
  echo "secret/mlflow-auth-config in mlflow exists, left unchanged"
fi
create mlflow mlflow-platform-user \
  --from-literal=username="$MLFLOW_PLATFORM_USER" \
  --from-literal=password="$MLFLOW_USER_PASSWORD"
object_store_args=(--from-literal=AWS_ACCESS_KEY_ID="$MLFLOW_KEY_ID"
  --from-literal=AWS_SECRET_ACCESS_KEY="$MLFLOW_SECRET"
  --from-literal=AWS_DEFAULT_REGION="$S3_REGION")
if [ -n "$S3_ENDPOINT_URL" ]; then
  object_store_args+=(--from-literal=MLFLOW_S3_ENDPOINT_URL="$S3_ENDPOINT_URL")
fi
create mlflow mlflow-object-store "${object_store_args[@]}"

# --- platform-data (kind/minikube only) --------------------------------------------------------------
if [ "$CREATE_DEV_SERVICES" = "1" ]; then
  create platform-data postgres-superuser --from-literal=password="$(random)"
  create platform-data postgres-app-passwords \
    --from-literal=dagster="$DAGSTER_DB_PASSWORD" \
    --from-literal=mlflow="$MLFLOW_DB_PASSWORD"
  create platform-data minio-root \
    --from-literal=root-user="$MINIO_ROOT_USER" \
    --from-literal=root-password="$MINIO_ROOT_PASSWORD"
  create platform-data minio-identities \
    --from-literal=platform-runs="$RUNS_SECRET" \
    --from-literal=platform-sensors="$SENSORS_SECRET" \
    --from-literal=mlflow-artifacts="$MLFLOW_SECRET"
  if ! exists platform-data postgres-tls; then
    # Self-signed for the dev PostgreSQL: clients use sslmode=require (encrypted, server not verified); on a
    # managed service use verify-full with the provider's CA instead.
    host=postgres.platform-data.svc.cluster.local
    openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=$host" \
      -addext "subjectAltName=DNS:$host,DNS:postgres.platform-data.svc,DNS:postgres.platform-data" \
      -keyout "$WORKDIR/tls.key" -out "$WORKDIR/tls.crt" 2>/dev/null
    create platform-data postgres-tls --from-file=tls.crt="$WORKDIR/tls.crt" --from-file=tls.key="$WORKDIR/tls.key"
  else
    echo "secret/postgres-tls in platform-data exists, left unchanged"
  fi
fi
