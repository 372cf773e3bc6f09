#!/usr/bin/env bash
# Open OnDemand's batch connect job script (template "basic", ood_core's
# lib/ood_core/batch_connect/template.rb), for the tests of ood/: submitted with sbatch
# --chdir=STAGED (OnDemand's work_dir), where the test rendered the app's template/*.erb as
# the dashboard does.
# Same steps and helpers as OnDemand's: source before.sh, fork script.sh, source after.sh,
# write connection.yml (umask 077), wait for script.sh, clean up. One difference: port_used
# asks bash's /dev/tcp instead of nc, which this machine lacks.
#SBATCH --job-name=hpc_chat-ood-test

# Export useful connection variables
export host
export port

create_yml () {
  echo "Generating connection YAML file..."
  (
    umask 077
    echo -e "host: $host\nport: $port\npassword: $password" > "connection.yml"
  )
}

clean_up () {
  echo "Cleaning up..."
  [[ -e "clean.sh" ]] && source "clean.sh"
  [[ ${SCRIPT_PID} ]] && pkill -P "${SCRIPT_PID}" || :
  pkill -P $$
  exit "${1:-0}"
}

source_helpers () {
  random_number () {
    shuf -i "${1}-${2}" -n 1
  }
  export -f random_number

  # Is port $1 (HOST:PORT, or PORT on localhost) in use?
  port_used () {
    local port="${1#*:}"
    local host
    host=$( (expr "${1}" : '\(.*\):' || echo "localhost") | awk 'END{print $NF}')
    timeout 2 bash -c "exec 3<>/dev/tcp/${host}/${port}" 2> /dev/null
  }
  export -f port_used

  # A free port in [$2..$3] (default 2000..65535) on host $1
  find_port () {
    local host="${1:-localhost}"
    local port
    port=$(random_number "${2:-2000}" "${3:-65535}")
    while port_used "${host}:${port}"; do
      port=$(random_number "${2:-2000}" "${3:-65535}")
    done
    echo "${port}"
  }
  export -f find_port

  # Wait up to $2 seconds (default 30) until port $1 is in use
  wait_until_port_used () {
    local port="${1}"
    local time="${2:-30}"
    for ((i=1; i<=time*2; i++)); do
      if port_used "${port}"; then
        return 0
      fi
      sleep 0.5
    done
    return 1
  }
  export -f wait_until_port_used

  # A random alphanumeric password of $1 (default 32) characters
  create_passwd () {
    tr -cd '[:alnum:]' < /dev/urandom 2> /dev/null | head -c"${1:-32}"
  }
  export -f create_passwd
}
export -f source_helpers

source_helpers

# Set host of current machine
host=$(hostname)

[[ -e "before.sh" ]] && source "before.sh"

echo "Script starting..."
"./script.sh" &
SCRIPT_PID=$!

[[ -e "after.sh" ]] && source "after.sh"

# Create the connection yaml file
create_yml

# Wait for script process to finish
wait "${SCRIPT_PID}" || clean_up 1

# Exit cleanly
clean_up
