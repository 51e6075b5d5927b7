// Shared by the browser tests: start Debian's chromium through playwright-core, find codes in
// the mail the test's SMTP listener wrote, take screenshots.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

export function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run through cargo test --test browser)`);
  return v;
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.POSTERN_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** Waits for a mail in `dir`, newer than `seen`, to `address` carrying a six-digit code. */
export async function codeFor(dir, address, seen = new Set()) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.eml')).sort()) {
      if (seen.has(f)) continue;
      const text = fs.readFileSync(path.join(dir, f), 'latin1');
      const to = /^To:.*$/im.exec(text);
      const code = /^\s*(\d{6})\s*$/m.exec(text);
      if (to && to[0].includes(address) && code) {
        seen.add(f);
        return code[1];
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no code arrived for ${address}`);
}

/** Every mail file present now (so that later waits skip them). */
export function mailSeen(dir) {
  return new Set(fs.readdirSync(dir).filter((f) => f.endsWith('.eml')));
}

export async function shot(page, name, opts = {}) {
  const dir = process.env.SHOTS;
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, `${name}.png`), fullPage: true, ...opts });
}

export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}
