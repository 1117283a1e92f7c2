# An old-style client: matrix-nio's password login (m.login.password on /login), then whoami, a room, a
# message and logout. Arguments: homeserver URL, user, CA file; the password on stdin. RESOLVE maps the
# URL's host name to 127.0.0.1 (the test host's mapped port is in the URL). Prints one JSON line.
import asyncio, json, socket, ssl, sys
from nio import AsyncClient, LoginResponse, LogoutResponse, RoomCreateResponse, RoomSendResponse, WhoamiResponse

hs, user, cafile = sys.argv[1:4]
password = sys.stdin.read()
name = hs.split("//", 1)[1].split(":", 1)[0].split("/", 1)[0]
real = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: real("127.0.0.1" if host == name else host, *a, **k)


async def main():
    client = AsyncClient(hs, user, ssl=ssl.create_default_context(cafile=cafile))
    out = {}
    try:
        login = await client.login(password, device_name="matrix-nio compat")
        if not isinstance(login, LoginResponse):
            out["error"] = f"login: {login}"
            return out
        out.update(user_id=login.user_id, device_id=login.device_id, token_prefix=login.access_token[:4])
        who = await client.whoami()
        out["whoami"] = who.user_id if isinstance(who, WhoamiResponse) else str(who)
        room = await client.room_create(name="matrix-nio")
        if not isinstance(room, RoomCreateResponse):
            out["error"] = f"room_create: {room}"
            return out
        sent = await client.room_send(room.room_id, "m.room.message", {"msgtype": "m.text", "body": "sent by matrix-nio"})
        out["sent"] = isinstance(sent, RoomSendResponse)
        out["logout"] = isinstance(await client.logout(), LogoutResponse)
        return out
    finally:
        await client.close()


print(json.dumps(asyncio.run(main())))
