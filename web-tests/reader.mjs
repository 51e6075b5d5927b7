// A recipient with no software: opens encrypted_message.htm from a file, clicks "Open my
// email", picks an address, types the emailed code, reads, downloads the attachment, replies.
import fs from 'node:fs';
import { launch, need, codeFor, mailSeen, shot, check } from './lib.mjs';

const PAGE = need('PAGE');
const MAIL_DIR = need('MAIL_DIR');
const ADDRESS = need('ADDRESS');
const ATTACHMENT = need('ATTACHMENT');
const REPLY_FILE = need('REPLY_FILE');

const browser = await launch();
try {
  // A phone-sized window: the reader is used on phones first.
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 412, height: 860 } });
  const page = await context.newPage();
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });

  await page.goto(PAGE);
  await shot(page, 'reader-1-attachment');
  const seen = mailSeen(MAIL_DIR);
  await page.getByRole('button', { name: 'Open my email' }).click();
  await page.waitForURL(/\/read\/m\//);
  check(await page.getByText('You have an encrypted message').isVisible(), 'the reader shows the message waiting');
  check(await page.getByText('alice@corp.example').first().isVisible(), 'the sender is shown');
  check(await page.getByLabel('carol@partner.example').isVisible(), 'every recipient address is offered');
  await shot(page, 'reader-2-choose-address');

  await page.getByLabel(ADDRESS).check();
  await page.getByRole('button', { name: 'Send me a code' }).click();
  await page.waitForURL(/\/code$/);
  const code = await codeFor(MAIL_DIR, ADDRESS, seen);

  // A wrong code first: refused, with a reason, and the form stays.
  await page.getByLabel('Code').fill(code === '000000' ? '111111' : '000000');
  await page.getByRole('button', { name: 'Open my message' }).click();
  check(await page.getByRole('alert').isVisible(), 'a wrong code is refused with a reason');
  await shot(page, 'reader-3-code');

  await page.getByLabel('Code').fill(code);
  await page.getByRole('button', { name: 'Open my message' }).click();
  await page.waitForSelector('#signature');
  check((await page.textContent('#signature')).includes('Signed by alice@corp.example'), 'the signature verdict names the sender');
  check((await page.textContent('#body')).includes('the figures are attached'), 'the message text is shown');
  await shot(page, 'reader-4-message');

  // What the browser is told: no scripts, no framing, no sniffing; a cookie scripts cannot read.
  const again = await page.reload();
  const h = again.headers();
  check(h['content-security-policy'].includes("default-src 'none'") && !h['content-security-policy'].includes('unsafe-inline'),
    'the page carries a strict Content-Security-Policy');
  check(h['x-frame-options'] === 'DENY' && h['x-content-type-options'] === 'nosniff', 'framing and sniffing are refused');
  const cookie = (await page.context().cookies()).find((c) => c.name === 'postern_reader');
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Lax', 'the session cookie is HttpOnly and SameSite');
  const messageUrl = page.url();
  const mid = new URL(messageUrl).pathname.split('/')[3];
  const forged = await page.request.post(`${new URL(page.url()).origin}/read/m/${mid}/code`, {
    form: { csrf: 'not-the-token', address: ADDRESS },
  });
  check(forged.status() === 403, 'a form without the session\'s CSRF token is refused (403)');
  const garbage = await page.request.post(`${new URL(page.url()).origin}/read`, { form: { sealed: 'not a sealed message' } });
  check(garbage.status() === 400 && (await garbage.text()).includes('damaged'), 'a post that is not a sealed message gets 400 and says why');

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: /figures-q3\.bin/ }).click(),
  ]);
  const got = fs.readFileSync(await download.path());
  check(download.suggestedFilename() === 'figures-q3.bin', 'the download keeps its name');
  check(Buffer.compare(got, fs.readFileSync(ATTACHMENT)) === 0, 'the downloaded attachment equals the original, byte for byte');

  await page.getByRole('link', { name: 'Reply', exact: true }).click();
  check((await page.inputValue('#to')).includes('alice@corp.example'), 'a reply goes to the sender');
  check((await page.inputValue('#subject')) === 'Re: Quarterly figures', 'the subject is prefixed');
  const quoted = await page.inputValue('#body');
  check(quoted.includes('> the figures are attached'), 'the original is quoted');
  await page.fill('#body', 'Thanks Alice, I can read them.\n\n' + quoted);

  // A bad address is named, nothing is sent, and what was written stays.
  await page.fill('#to', 'alice at corp');
  await page.getByRole('button', { name: 'Send encrypted' }).click();
  const refused = await page.getByRole('alert').textContent();
  check(refused.includes('To:') && refused.includes('alice'), 'a bad To address is refused, naming the field');
  check((await page.inputValue('#body')).startsWith('Thanks Alice'), 'the text written is kept');
  await page.fill('#to', 'alice@corp.example');
  await page.setInputFiles('#attachment', REPLY_FILE);
  await shot(page, 'reader-5-reply');
  await page.getByRole('button', { name: 'Send encrypted' }).click();
  await page.waitForSelector('#sent');
  check((await page.textContent('#sent')).includes('alice@corp.example'), 'the reply is confirmed as sent');
  await shot(page, 'reader-6-sent');
  check(dialogs.length === 0, 'no dialog opened');

  // The laptop view of the message, for the README.
  await page.setViewportSize({ width: 1200, height: 900 });
  await page.goto(messageUrl);
  await page.waitForSelector('#signature');
  await shot(page, 'reader-message-laptop');
} finally {
  await browser.close();
}
