// A message full of scripts, event handlers, javascript: links and remote content: nothing
// runs, no dialog opens, nothing is fetched from the tracker until "Show remote content".
import http from 'node:http';
import { launch, need, codeFor, mailSeen, shot, check } from './lib.mjs';

const PAGE = need('PAGE');
const MAIL_DIR = need('MAIL_DIR');
const ADDRESS = need('ADDRESS');
const TRACKER_PORT = Number(need('TRACKER_PORT'));

const hits = [];
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
const tracker = http.createServer((req, res) => {
  hits.push(req.url);
  res.writeHead(200, { 'content-type': 'image/png', 'access-control-allow-origin': '*' });
  res.end(PNG);
});
await new Promise((r) => tracker.listen(TRACKER_PORT, '127.0.0.1', r));

const browser = await launch();
try {
  const page = await (await browser.newContext({ viewport: { width: 412, height: 860 } })).newPage();
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));

  await page.goto(PAGE);
  const seen = mailSeen(MAIL_DIR);
  await page.getByRole('button', { name: 'Open my email' }).click();
  await page.getByRole('button', { name: 'Send me a code' }).click();
  await page.getByLabel('Code').fill(await codeFor(MAIL_DIR, ADDRESS, seen));
  await page.getByRole('button', { name: 'Open my message' }).click();
  await page.waitForSelector('#body');
  check((await page.textContent('#body')).includes('important'), 'the harmless text is shown');

  await page.getByText('Hover here').hover();
  await page.getByText('Click for details').click();
  await page.waitForTimeout(1000);
  check(await page.evaluate(() => document.scripts.length) === 0, 'the page holds no script element');
  check(await page.evaluate(() => document.querySelectorAll('#body [id]').length) === 0,
    'the message cannot set ids (it could pose as the page\'s own signature verdict)');
  check(await page.evaluate(() => document.querySelectorAll('[onerror],[onmouseover],[onclick],iframe,object').length) === 0,
    'no event handler, frame or object survives');
  check(await page.evaluate(() => [...document.querySelectorAll('a')].every((a) => !a.href.startsWith('javascript:'))),
    'no javascript: link survives');
  check(dialogs.length === 0, `no dialog opened (${dialogs.join(', ')})`);
  check(hits.length === 0, `nothing was fetched from the tracker before asking (${hits.join(', ')})`);
  check(await page.isVisible('#remote-blocked'), 'the page says remote images were held back');
  await shot(page, 'reader-remote-blocked');

  await page.click('#show-remote');
  await page.waitForSelector('#body img[alt=tracker]');
  await page.waitForFunction(() => document.querySelector('#body img[alt=tracker]').complete);
  await page.waitForTimeout(500);
  check(hits.includes('/pixel.png'), 'the remote image loads once asked for');
  check(hits.every((h) => h === '/pixel.png'), `only the image was fetched (${hits.join(', ')})`);
  check(dialogs.length === 0 && errors.length === 0, 'still no dialog and no script ran');
} finally {
  await browser.close();
  tracker.close();
}
