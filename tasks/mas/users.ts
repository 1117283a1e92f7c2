/**
 * Users made through MAS's admin API (MAS v1.22.0, /api/admin/v1; research-24 §6): `mas-cli manage
 * register-user` takes the password on its command line only, the admin API in a request body, which
 * travels here on stdin. The token comes from the static client of config.yaml (client_credentials, scope
 * urn:mas:admin), its secret read from its file on the host; token and secret stay in a 0700 temporary
 * directory, never on a command line.
 */
import { sh, type ShellCommand } from '../../src/core/shell.js'
import type { MatrixSettings } from '../../src/inventory/types.js'
import { MAS_ADMIN_CLIENT_ID, MAS_ADMIN_CLIENT_SECRET } from './templates.js'

/** MAS's usernames: Matrix localparts (lower case). */
export const MAS_USERNAME = /^[a-z0-9._=/+-]{1,255}$/

/**
 * Creates `user` unless it exists, then sets its password from stdin (a JSON body {password, ...}); with
 * `admin`, lets it request admin rights. An existing user's password is left alone. Prints
 * `created <id>` or `exists <id>`, and `admin` when set.
 */
export function masUserCommand(vars: MatrixSettings, user: string, admin: boolean): ShellCommand {
  if (!MAS_USERNAME.test(user)) throw new Error(`not a MAS username: ${user}`)
  const token = `http://127.0.0.1:${vars.mas.port}/oauth2/token`
  const api = `http://127.0.0.1:${vars.mas.healthPort}/api/admin/v1`
  return sh`set -eu; umask 077; t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
printf 'user = "%s:%s"\\n' ${MAS_ADMIN_CLIENT_ID} "$(cat ${MAS_ADMIN_CLIENT_SECRET})" > "$t/auth"
curl -sS -f --max-time 30 -K "$t/auth" -d 'grant_type=client_credentials&scope=urn:mas:admin' ${token} > "$t/token"
printf 'Authorization: Bearer %s\\n' "$(sed -n 's/.*"access_token" *: *"\\([^"]*\\)".*/\\1/p' "$t/token")" > "$t/h"
code=$(curl -sS --max-time 30 -o "$t/user" -w '%{http_code}' -H @"$t/h" ${`${api}/users/by-username/${user}`})
id() { sed -n 's/.*"data":{[^{}]*"id":"\\([^"]*\\)".*/\\1/p' "$1"; }
if [ "$code" = 200 ]; then echo "exists $(id "$t/user")"; cat > /dev/null
elif [ "$code" = 404 ]; then
  curl -sS -f --max-time 30 -H @"$t/h" -H 'Content-Type: application/json' -d ${JSON.stringify({ username: user })} ${`${api}/users`} > "$t/user"
  curl -sS -f --max-time 30 -o /dev/null -H @"$t/h" -H 'Content-Type: application/json' --data-binary @- ${`${api}/users/`}"$(id "$t/user")"/set-password
  echo "created $(id "$t/user")"
else echo "MAS admin API: HTTP $code: $(head -c 300 "$t/user")" >&2; exit 1; fi
${admin ? sh`curl -sS -f --max-time 30 -o /dev/null -H @"$t/h" -H 'Content-Type: application/json' -d '{"admin":true}' ${`${api}/users/`}"$(id "$t/user")"/set-admin; echo admin` : sh`:`}`
}
