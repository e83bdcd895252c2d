// Headless Chromium (the Debian package) through the gateway's sign-in and consent:
// `node browser.mjs AUTHORIZE_URL REDIRECT_URI LOGIN CONSENT.png APPS.png`. Prints one JSON
// line: the redirect the MCP client received, the consent page's and the connected-apps
// page's text, and the cookies.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [authorizeUrl, redirectUri, login, screenshot, appsShot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'mgw-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  ignoreHTTPSErrors: true, // the gateway's development CA
  viewport: { width: 900, height: 640 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
  ],
  timeout: 30000,
});
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(20000);
  // The MCP client's loopback callback: answered here, as the client's listener would.
  let received = null;
  await page.route(`${redirectUri}**`, (route) => {
    received = route.request().url();
    return route.fulfill({ status: 200, contentType: 'text/plain', body: 'client got the code' });
  });
  await page.goto(authorizeUrl);
  // The provider's login form (oidc-provider devInteractions), then its consent.
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
  await page.waitForSelector('button[type=submit]');
  if (await page.$('input[name=prompt][value=consent]')) {
    await page.click('button[type=submit]');
  }
  // The gateway's consent page, naming the client, its redirect host, scopes, the person.
  await page.waitForSelector('button[value=approve]');
  const consent = await page.innerText('body');
  await page.screenshot({ path: screenshot });
  await page.click('button[value=approve]');
  await page.waitForURL(`${redirectUri}**`);
  // The person's connected apps, with the session cookie alone.
  await page.goto(new URL('/oauth/apps', authorizeUrl).href);
  const apps = await page.innerText('body');
  await page.screenshot({ path: appsShot });
  const cookies = (await context.cookies()).map((c) => ({
    name: c.name, secure: c.secure, httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path,
  }));
  console.log(JSON.stringify({ received, consent, apps, cookies }));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
