// An administrator signs in, adds a quarantine rule, a matching message is sent and held, the
// administrator finds it with the quarantine query and releases it. Screenshots of every page.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { launch, need, shot, check } from './lib.mjs';

const BASE = need('BASE');
const SMTP_PORT = need('SMTP_PORT');
const MAIL_DIR = need('MAIL_DIR');

/** Messages that left the gateway for `rcpt` so far. */
function delivered(rcpt) {
  return fs.readdirSync(MAIL_DIR).filter((f) => f.endsWith('.eml'))
    .filter((f) => /^To:.*$/im.exec(fs.readFileSync(path.join(MAIL_DIR, f), 'latin1'))?.[0].includes(rcpt));
}

function sendMail() {
  const py = `
import smtplib, sys
from email.message import EmailMessage
m = EmailMessage()
m['From'] = 'alice@corp.example'
m['To'] = 'dave@partner.example'
m['Subject'] = 'Payroll run for November'
m.set_content('The payroll file is ready.')
with smtplib.SMTP('127.0.0.1', int(sys.argv[1])) as s:
    s.send_message(m)
`;
  execFileSync('python3', ['-c', py, SMTP_PORT]);
}

const browser = await launch();
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });

  const anonymous = await page.request.get(`${BASE}/admin/quarantine`, { maxRedirects: 0 });
  check(anonymous.status() === 303 && anonymous.headers().location === '/admin/login', 'a page without a login sends to the login');
  await page.goto(`${BASE}/admin`);
  await page.waitForURL(/\/admin\/login$/);
  await page.fill('#name', 'root');
  await page.fill('#password', 'not the password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  check(await page.getByRole('alert').isVisible(), 'a wrong password is refused');
  await shot(page, 'admin-login');
  // A guesser gets ten tries per name and address in an hour; then not even the password is
  // checked. Other names are not held up.
  const signIn = async (name, password) => {
    await page.fill('#name', name);
    await page.fill('#password', password);
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/admin/login') && r.request().method() === 'POST'),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    await page.waitForLoadState();
    return answer.status();
  };
  for (let i = 0; i < 10; i++) {
    check(await signIn('ghost', `guess ${i}`) === 401 && (await page.textContent('[role=alert]')).includes('Wrong name or password'),
      `guess ${i + 1} for a name is refused as wrong (401)`);
  }
  check(await signIn('ghost', 'guess 10') === 429 && (await page.textContent('[role=alert]')).includes('Too many failed logins'),
    'the eleventh guess for a name in an hour is refused unchecked (429)');
  await page.fill('#name', 'root');
  await page.fill('#password', 'correct horse battery staple');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/\/admin\/status$/);
  check(await page.getByText('Signed in as root').isVisible(), 'the administrator is signed in');
  check((await page.textContent('#components')).includes('Key server'), 'the status page lists the components');
  // Each task's state comes from the task itself: all of them run in a healthy gateway.
  for (const name of ['SMTP receiver, policy', 'Policy and encryption', 'Maintenance', 'Delivery', 'Key server']) {
    const row = page.locator('#components tr', { hasText: name });
    check((await row.count()) === 1 && (await row.locator('.pill').textContent()).trim() === 'running', `the status page shows ${name} running`);
  }
  check((await page.locator('#components tr', { hasText: 'SMTP receiver, policy' }).textContent()).includes(`127.0.0.1:${SMTP_PORT}`),
    'the SMTP receiver row names the address it listens on');
  await shot(page, 'admin-status');

  await page.click('text=Policies');
  await page.waitForURL(/\/admin\/policy$/);
  // The rule form: a number that is not one, then a quarantine with no area, are refused
  // naming the field, and what was typed stays.
  await page.click('#new-rule');
  await page.fill('#order', 'five');
  await page.fill('#name', 'Hold payroll');
  await page.selectOption('#direction', 'outbound');
  await page.fill('#senders', '*@corp.example');
  await page.selectOption('#c0-on', 'subject');
  await page.fill('#c0-keywords', 'payroll');
  await page.selectOption('#a0-do', 'quarantine');
  await page.fill('#a0-area', '');
  await page.click('#save');
  await page.waitForSelector('#error');
  check((await page.textContent('#error')).includes('order: "five" is not a whole number'), 'a wrong order number is refused naming it');
  check(await page.inputValue('#name') === 'Hold payroll' && await page.inputValue('#c0-keywords') === 'payroll', 'the values typed are kept');
  await page.fill('#order', '5');
  await page.click('#save');
  await page.waitForSelector('#error');
  check((await page.textContent('#error')).includes('area'), 'a quarantine without an area is refused naming the field');
  await page.fill('#a0-area', 'Payroll');
  // A second action, in a row the form adds.
  check(await page.locator('#a2-do').count() === 0, 'one unused action row to start with');
  await page.click('#more');
  await page.waitForSelector('#a2-do');
  check(await page.inputValue('#a0-area') === 'Payroll', 'adding rows keeps what was typed');
  await page.selectOption('#a1-do', 'add_header');
  await page.fill('#a1-name', 'X-Held-For');
  await page.fill('#a1-value', 'payroll review');
  await shot(page, 'admin-rule');
  await page.click('#save');
  await page.waitForURL(/\/admin\/policy\?done=/);
  check((await page.textContent('#rules')).includes('Hold payroll'), 'the new rule is listed');
  await shot(page, 'admin-policy');
  // Rules are named by order numbers: a page made before the policy changed may not change it.
  const csrf = await page.locator('input[name=csrf]').first().inputValue();
  const stale = await page.request.post(`${BASE}/admin/policy/change`, { form: { csrf, order: '5', change: 'disable', version: '0' } });
  check(stale.status() === 409, 'a change from a page older than the policy is refused (409)');
  // The same rule in the policy file's form, for those who prefer text.
  await page.goto(`${BASE}/admin/policy/rule?order=5&text=1`);
  const asText = await page.inputValue('#text');
  check(asText.includes('area = "Payroll"') && asText.includes('name = "X-Held-For"') && asText.includes('keywords = ["payroll"]'),
    'the rule made in the form reads back as text');
  await page.fill('#text', 'order = "five"');
  await page.click('#save');
  check(await page.isVisible('#error'), 'an invalid rule text is refused with the reason');
  await page.goto(`${BASE}/admin/policy`);

  sendMail();
  await page.click('text=Quarantine');
  await page.fill('#subject', 'payroll');
  let found = false;
  for (let i = 0; i < 100 && !found; i++) {
    await page.click('button:has-text("Search")');
    found = (await page.locator('#held').count()) > 0 && (await page.textContent('#held')).includes('Payroll run for November');
    if (!found) await page.waitForTimeout(300);
  }
  check(found, 'the held message is found by its subject');
  check((await page.textContent('#held')).includes('Hold payroll'), 'the quarantine names the rule');
  await shot(page, 'admin-quarantine');
  check(delivered('dave@partner.example').length === 0, 'the held message has not left');
  const forged = await page.request.post(`${BASE}/admin/quarantine/act`, { form: { csrf: 'forged', op: 'release' } });
  check(forged.status() === 403, 'a post without the session\'s CSRF token is refused (403)');
  await page.locator('#held button[value=release]').first().click();
  await page.waitForSelector('#notice');
  check((await page.textContent('#notice')).includes('Released 1'), 'the release is confirmed');

  await page.click('text=Errored queue');
  await shot(page, 'admin-errored');
  await page.click('text=SMTP & MIMEBuilder');
  const header = page.getByLabel('Encryption X-Header', { exact: true });
  check(await header.inputValue() === 'X-Postern-Encrypted', 'the MIMEBuilder settings show the running values');
  check(await page.getByLabel('Add encryption X-Header').isChecked(), 'the flags show as boxes');
  // A wrong value is refused naming the field, nothing is saved, and what was typed stays.
  const listen = page.getByLabel('Incoming messages address');
  const goodListen = await listen.inputValue();
  await listen.fill('not an address');
  await header.fill('X-Acme-Encrypted');
  await page.click('#save-settings');
  await page.waitForSelector('#error');
  check((await page.textContent('#error')).includes('smtp.listen'), 'a wrong address is refused naming smtp.listen');
  check(await header.inputValue() === 'X-Acme-Encrypted', 'the values typed are kept after an error');
  await listen.fill(goodListen);
  await page.click('#save-settings');
  await page.waitForSelector('#notice');
  check((await page.textContent('#notice')).includes('Saved 1 change'), 'the change is saved');
  check(await header.inputValue() === 'X-Acme-Encrypted', 'the saved value is shown');
  check((await page.textContent('#pending')).includes('restarts'), 'the page says the change waits for a restart');
  check((await page.textContent('main')).includes('Running with: X-Postern-Encrypted'), 'the running value is shown beside it');
  await shot(page, 'admin-settings');
  await page.click('text=Key server');
  check((await page.textContent('#tokens')).includes('local-gateway'), 'the gateway token is listed');
  // A token for another gateway: refused without a domain, then made, shown once, and it
  // fetches keys from the key server until it is revoked.
  await page.fill('#token-name', 'branch-gateway');
  await page.click('#create-token-button');
  await page.waitForSelector('#error');
  check((await page.textContent('#error')).includes('domains'), 'a token without domains is refused naming the field');
  check(await page.inputValue('#token-name') === 'branch-gateway', 'the name typed is kept');
  await page.fill('#token-domains', 'corp.example');
  await page.click('#create-token-button');
  await page.waitForSelector('#token-value');
  const token = (await page.textContent('#token-value')).trim();
  check(token.startsWith('pgw_'), 'the new token is shown');
  check((await page.textContent('#tokens')).includes('branch-gateway'), 'the new token is listed');
  await shot(page, 'admin-keyserver');
  const epoch = new Date().toISOString().slice(0, 7);
  const fetchKey = () => page.request.post(`${BASE}/api/keys/v1/key`, {
    headers: { Authorization: `Bearer ${token}` },
    data: { email: 'alice@corp.example', epoch, kind: 'sign' },
  });
  check((await fetchKey()).status() === 200, 'the new token fetches a key for its domain');
  await page.getByRole('button', { name: 'Revoke branch-gateway' }).click();
  await page.waitForSelector('#notice');
  check((await page.textContent('#notice')).includes('Revoked'), 'the revocation is confirmed');
  check((await fetchKey()).status() === 401, 'the revoked token fetches nothing');
  await page.click('text=Audit log');
  const audit = await page.textContent('#audit');
  check(audit.includes('policy.save') && audit.includes('quarantine.release') && audit.includes('settings.save') && audit.includes('token.create') && audit.includes('token.revoke') && audit.includes('admin:root'),
    'the audit log names the administrator and each change');
  await shot(page, 'admin-audit');
  check(dialogs.length === 0, 'no dialog opened');
} finally {
  await browser.close();
}
