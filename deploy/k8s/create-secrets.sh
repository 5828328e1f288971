#!/usr/bin/env bash
# Creates every Secret the platform reads, with generated values, without writing any value to disk or
# to the repository. Idempotent: an existing Secret is left untouched, and values shared between
# namespaces are read back from whichever Secret already holds them, so a re-run never rotates a
# password behind PostgreSQL's back. To rotate, delete the Secrets (and, for the dev database, its
# volume) and run again.
#
#   deploy/k8s/create-secrets.sh            # kind/minikube: dev PostgreSQL and MinIO in platform-data
#
# Managed cluster: point at your services and bring your own object-store keys (or leave them empty and
# use workload identity, see deploy/README.md):
#   PG_HOST=mydb.example.internal PG_SSLMODE=require CREATE_DEV_SERVICES=0 \
#   S3_ACCESS_KEY_ID=... S3_SECRET_ACCESS_KEY=... S3_ENDPOINT_URL= deploy/k8s/create-secrets.sh
#
# Secret                      namespace       keys                                       read by
# dagster-postgresql-secret   dagster         postgresql-password                        Dagster chart (DAGSTER_PG_PASSWORD), run pods
# ray-auth-token              dagster         auth_token                                 KubeRay authOptions, Dagster pods (RAY_AUTH_TOKEN)
# mlflow-client-credentials   dagster         MLFLOW_TRACKING_USERNAME/_PASSWORD         code server and run pods (envSecrets)
# platform-object-store       dagster         AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   code server and run pods (envSecrets)
# mlflow-server               mlflow          backend-store-uri, admin-username,         MLflow server
#                                             admin-password, flask-secret-key
# mlflow-auth-config          mlflow          basic_auth.ini                             MLflow server (auth database URI)
# mlflow-platform-user        mlflow          username, password                         deploy/mlflow/bootstrap-user-job.yaml
# mlflow-object-store         mlflow          AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,  MLflow server (artifact proxy)
#                                             AWS_DEFAULT_REGION, MLFLOW_S3_ENDPOINT_URL
# postgres-superuser          platform-data   password                                   dev PostgreSQL (POSTGRES_PASSWORD)
# postgres-app-passwords      platform-data   dagster, mlflow                            dev PostgreSQL init script
# minio-root                  platform-data   root-user, root-password                   dev MinIO, bucket Job
set -euo pipefail

PG_HOST="${PG_HOST:-postgres.platform-data.svc.cluster.local}"
PG_PORT="${PG_PORT:-5432}"
PG_SSLMODE="${PG_SSLMODE:-disable}"
CREATE_DEV_SERVICES="${CREATE_DEV_SERVICES:-1}"
S3_ENDPOINT_URL="${S3_ENDPOINT_URL-http://minio.platform-data.svc.cluster.local:9000}"
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
S3_ACCESS_KEY_ID="${S3_ACCESS_KEY_ID-$(first_of "$(read_key dagster platform-object-store AWS_ACCESS_KEY_ID)" "$MINIO_ROOT_USER")}"
S3_SECRET_ACCESS_KEY="${S3_SECRET_ACCESS_KEY-$(first_of "$(read_key dagster platform-object-store AWS_SECRET_ACCESS_KEY)" "$MINIO_ROOT_PASSWORD")}"
MLFLOW_USER_PASSWORD="$(first_of "$(read_key dagster mlflow-client-credentials MLFLOW_TRACKING_PASSWORD)" \
  "$(read_key mlflow mlflow-platform-user password)")"

kubectl apply -f "$SCRIPT_DIR/namespaces.yaml" >/dev/null

# --- dagster -----------------------------------------------------------------------------------------
create dagster dagster-postgresql-secret --from-literal=postgresql-password="$DAGSTER_DB_PASSWORD"
create dagster ray-auth-token --from-literal=auth_token="$(random)$(random)"
create dagster mlflow-client-credentials \
  --from-literal=MLFLOW_TRACKING_USERNAME="$MLFLOW_PLATFORM_USER" \
  --from-literal=MLFLOW_TRACKING_PASSWORD="$MLFLOW_USER_PASSWORD"
create dagster platform-object-store \
  --from-literal=AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY_ID" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$S3_SECRET_ACCESS_KEY"

# --- mlflow ------------------------------------------------------------------------------------------
create mlflow mlflow-server \
  --from-literal=backend-store-uri="postgresql://mlflow:${MLFLOW_DB_PASSWORD}@${PG_HOST}:${PG_PORT}/mlflow?sslmode=${PG_SSLMODE}" \
  --from-literal=admin-username=admin \
  --from-literal=admin-password="$(random)" \
  --from-literal=flask-secret-key="$(random)$(random)"
if ! exists mlflow mlflow-auth-config; then
  auth_ini="$(mktemp)"
  trap 'rm -f "$auth_ini"' EXIT
  sed -e "s|postgresql://mlflow:__MLFLOW_DB_PASSWORD__@postgres.platform-data.svc.cluster.local:5432/mlflow_auth|postgresql://mlflow:${MLFLOW_DB_PASSWORD}@${PG_HOST}:${PG_PORT}/mlflow_auth?sslmode=${PG_SSLMODE}|" \
    "$SCRIPT_DIR/../mlflow/basic_auth.ini.example" >"$auth_ini"
  create mlflow mlflow-auth-config --from-file=basic_auth.ini="$auth_ini"
else
  echo "secret/mlflow-auth-config in mlflow exists, left unchanged"
fi
create mlflow mlflow-platform-user \
  --from-literal=username="$MLFLOW_PLATFORM_USER" \
  --from-literal=password="$MLFLOW_USER_PASSWORD"
object_store_args=(--from-literal=AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY_ID"
  --from-literal=AWS_SECRET_ACCESS_KEY="$S3_SECRET_ACCESS_KEY"
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
fi
