#!/usr/bin/env bash
# retry.sh TRIES COMMAND [ARGS...]: run COMMAND; if it fails, wait and run it again, TRIES times
# in all. A network hiccup during `pip install` then costs one retry, not the whole set-up.
# Exits with COMMAND's last status. RETRY_PAUSE: seconds before the first retry (default 10, then 20, ...).
set -u
pause=${RETRY_PAUSE:-10}
tries=$1
shift
for ((attempt = 1; ; attempt++)); do
  "$@" && exit 0
  status=$?
  if ((attempt >= tries)); then
    echo "retry.sh: failed $attempt times (exit $status): $*" >&2
    exit "$status"
  fi
  echo "retry.sh: exit $status, trying again in $((pause * attempt)) s ($((attempt + 1)) of $tries): $*" >&2
  sleep $((pause * attempt))
done
