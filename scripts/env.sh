# Sourced by up.sh and demo.sh: .env fills in what the environment does not set, so every script and the tools
# they start (taxi-replay, taxi-backfill, taxi-rollback) read the same configuration.
if [ -f .env ]; then
  while IFS='=' read -r key value; do
    [ -n "${!key+x}" ] && continue
    value="${value%\"}"
    value="${value#\"}"
    export "$key=$value"
  done < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' .env)
fi
