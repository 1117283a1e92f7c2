import type { Browser, BrowserContext, Page } from 'playwright-core'

/**
 * The real Element Web (v1.12.7) driven like a person would, in a browser from launchChromium: password
 * login (a homeserver without MAS) or OIDC login through MAS's pages, then an encrypted room. Selectors
 * are Element's and MAS's own (ids, roles, visible texts), as read in their 1.12.7 / 1.22.0 markup.
 */
const T = 60_000

export type LoginMode = 'password' | 'mas'

export interface ElementUser {
  /** Localpart. */
  user: string
  password: string
}

export interface ElementSession {
  context: BrowserContext
  page: Page
  /** 404 answers of the Element origin (beyond the expected ones, see below): a file of the release that is not served. */
  notFound: string[]
}

/** Element asks for config.<hostname>.json before config.json: its 404 is expected. */
const EXPECTED_404 = /\/config\.[^/]+\.json(\?|$)/

/** Logs `u` in on a context of its own (own storage: own Matrix device) and waits for the room list. */
export async function elementLogin(browser: Browser, elementUrl: string, u: ElementUser, mode: LoginMode): Promise<ElementSession> {
  const context = await browser.newContext({ ignoreHTTPSErrors: true })
  const page = await context.newPage()
  const origin = new URL(elementUrl).origin
  const notFound: string[] = []
  page.on('response', (r) => {
    if (r.status() === 404 && r.url().startsWith(origin + '/') && !EXPECTED_404.test(r.url())) notFound.push(r.url())
  })
  await page.goto(`${elementUrl}/#/login`)
  if (mode === 'password') {
    await page.locator('#mx_LoginForm_username').fill(u.user, { timeout: T })
    await page.locator('#mx_LoginForm_password').fill(u.password)
    await page.getByRole('button', { name: 'Sign in' }).click()
  } else {
    // OIDC-native: Element found the homeserver's auth_metadata and offers only "Continue" (to MAS).
    await page.getByRole('button', { name: 'Continue' }).click({ timeout: T })
    await page.waitForURL((url) => !url.href.startsWith(origin), { timeout: T })
    await page.locator('input[name="username"]').fill(u.user)
    await page.locator('input[name="password"]').fill(u.password)
    await page.locator('form button[type="submit"]').first().click()
    // MAS's consent page: the first form continues (the second is "use another account").
    await page.waitForURL(/\/consent\//, { timeout: T })
    await page.locator('form button[type="submit"]').first().click()
    await page.waitForURL((url) => url.href.startsWith(origin), { timeout: T })
  }
  await page.locator('.mx_RoomListPanel, .mx_LeftPanel, .mx_HomePage').first().waitFor({ timeout: T })
  return { context, page, notFound }
}

/** Toasts a fresh session shows ("Set up recovery", "Verify this device"): closed when present. */
async function dismissToasts(page: Page): Promise<void> {
  for (const name of ['Dismiss', 'Later', "I'll verify later", 'Skip', 'Close']) {
    const button = page.getByRole('button', { name, exact: true })
    if (await button.count())
      await button
        .first()
        .click()
        .catch(() => {})
  }
}

/**
 * Types `text` into the room's composer and sends it. Enter first completes an autocomplete that is
 * open (the /invite command, a user id: they appear as their searches answer), and only then sends: so
 * Enter is pressed until the composer is empty, the state that says it was sent.
 */
async function send(page: Page, text: string): Promise<void> {
  const composer = page.locator('.mx_BasicMessageComposer_input').first()
  await composer.fill(text, { timeout: T })
  const empty = async () => !(await composer.textContent())?.trim()
  for (let i = 0; i < 4; i++) {
    await composer.press('Enter')
    for (const t0 = Date.now(); Date.now() - t0 < 5_000; await page.waitForTimeout(250)) if (await empty()) return
  }
  throw new Error(`the composer still holds "${await composer.textContent()}" after Enter`)
}

/**
 * `a` creates a private room (Element encrypts new private rooms by default), invites `b` with /invite,
 * `b` accepts, `a` sends once it sees the join, and `b` must show the text. Both must be logged in before
 * the message is sent: the room key goes to the devices the room has then. Returns the room id (from
 * `a`'s URL) for a check through the client API.
 */
export async function encryptedConversation(
  a: ElementSession,
  b: ElementSession,
  opts: { elementUrl: string; serverName: string; invitee: string; roomName: string; text: string },
): Promise<string> {
  const p = a.page
  await dismissToasts(p)
  await p.goto(`${opts.elementUrl}/#/home`)
  await p.getByRole('button', { name: 'Create a Group Chat' }).click({ timeout: T })
  await p.getByLabel('Name').fill(opts.roomName)
  await p.getByRole('button', { name: 'Create room' }).click()
  await p.locator('.mx_RoomView').waitFor({ timeout: T })
  await p.waitForURL(/#\/room\/!/, { timeout: T })
  const roomId = decodeURIComponent(/#\/room\/(![^/?]+)/.exec(p.url())![1]!)
  await send(p, `/invite @${opts.invitee}:${opts.serverName}`)

  await dismissToasts(b.page)
  await b.page.locator('.mx_RoomTile, [role="option"]', { hasText: opts.roomName }).first().click({ timeout: T })
  await b.page.getByRole('button', { name: 'Accept' }).click({ timeout: T })
  await b.page.locator('.mx_RoomView_body, .mx_RoomView_messagePanel').first().waitFor({ timeout: T })
  await p
    .getByText(new RegExp(`${opts.invitee}.* joined`))
    .first()
    .waitFor({ timeout: T })

  await send(p, opts.text)
  await p.locator('.mx_EventTile_body', { hasText: opts.text }).waitFor({ timeout: T })
  // Decrypted on b's device: the text itself, not "Unable to decrypt" or "Waiting for this message".
  await b.page.locator('.mx_EventTile_body', { hasText: opts.text }).waitFor({ timeout: T })
  return roomId
}
