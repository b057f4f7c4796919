// Browser tests of the chat page's features (static/index.html): the name asked
// before connecting, renames, the member list, links, line breaks, dates, the
// "new messages" cue, the unread count in the title, the byte limit, the phone
// layout. Each test has rooms of its own, so they do not see each other.
// chat.test.mjs covers the basics (chatting, history, reconnecting).
//
// Run via `cargo test --test browser`, or directly:
//
//   LOOPCHAT_BIN=target/debug/loopchat node tests/browser/page.test.mjs [NAME_FILTER]
//
// Environment:
//   LOOPCHAT_BIN       server binary (required); this script starts two servers:
//                      one with a 1 KiB message limit, one with a flood limit of
//                      one message a second and no member lists
//   CHROMIUM           browser binary (default /usr/bin/chromium)
//   UPDATE_SCREENSHOT  1 = also write tests/browser/screenshot.png (for the README)
//   BROWSER_OUT        where screenshots go (default <repo>/target/browser)
//   HEADED             1 = show the browser window (needs a display)
//   LOOPCHAT_ARGS      extra server arguments, split on spaces; e.g.
//                      "--static-dir static" tests the page without a rebuild

import { spawn } from 'node:child_process';
import { mkdirSync, copyFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { canConnect, freePort, launchChromium, sleep } from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const BIN = process.env.LOOPCHAT_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = path.resolve(REPO, process.env.BROWSER_OUT || 'target/browser');
const OVERALL_TIMEOUT_MS = 100_000;
const STEP_TIMEOUT_MS = 10_000;
const EXTRA_ARGS = (process.env.LOOPCHAT_ARGS || '').split(' ').filter(Boolean);
const ONLY = process.argv[2] || '';

if (!BIN) {
  console.error('LOOPCHAT_BIN is not set (path to the loopchat server binary)');
  process.exit(2);
}

// --------------------------------------------------------------- servers ----
const servers = new Set();    // running { child, output, exited }


/// Starts the server with `args` on a free loopback port; returns its base URL.
async function startServer(args) {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = spawn(BIN, ['--addr', `127.0.0.1:${port}`, ...args, ...EXTRA_ARGS], { stdio: ['ignore', 'pipe', 'pipe'] });
    const output = [];
    const keep = (chunk) => { output.push(chunk.toString()); if (output.length > 400) output.shift(); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let exitInfo = null;
    const exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => { exitInfo = { code, signal }; resolve(exitInfo); });
      child.once('error', (err) => { exitInfo = { error: err }; resolve(exitInfo); });
    });
    const server = { child, output, exited, base: `http://127.0.0.1:${port}`, args };
    servers.add(server);

    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !exitInfo) {
      if (await canConnect(port)) {
        log(`server pid ${child.pid} on 127.0.0.1:${port} (${args.join(' ')})`);
        return server;
      }
      await sleep(50);
    }
    servers.delete(server);
    // The port was free a moment ago; another process may have taken it.
    if (exitInfo && attempt < 5 && !/error: /i.test(output.join(''))) continue;
    throw new Error(`server ${args.join(' ')} did not start (${JSON.stringify(exitInfo)})\n` + output.join(''));
  }
}

async function stopServer(server) {
  servers.delete(server);
  const { child, exited } = server;
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

// Synchronous last resort so no server outlives this script.
process.on('exit', () => { for (const s of servers) s.child.kill('SIGKILL'); });

// --------------------------------------------------------------- helpers ----
const t0 = Date.now();
function log(msg) { console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`); }

async function waitFor(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: STEP_TIMEOUT_MS, polling: 50 });
  } catch (e) {
    throw new Error(`${page.who}: timed out waiting for: ${what}`);
  }
}

const notice = (page, text) =>
  waitFor(page, `notice containing "${text}"`,
    (t) => [...document.querySelectorAll('#log .notice')].some((e) => e.textContent.includes(t)), text);

const notices = (page) => page.$$eval('#log .notice', (els) => els.map((e) => e.textContent));

const message = (page, from, text) =>
  waitFor(page, `message from ${from}: ${JSON.stringify(text)}`,
    ([f, t]) => [...document.querySelectorAll('#log .msg')].some(
      (m) => m.dataset.from === f && m.querySelector('.text')?.textContent === t), [from, text]);

/// The member list as the page shows it: names, in order.
const memberNames = (page) => page.$$eval('#member-list li', (els) => els.map((e) => e.dataset.name));

const membersAre = (page, names) =>
  waitFor(page, `member list = ${names.join(', ')}`,
    (want) => JSON.stringify([...document.querySelectorAll('#member-list li')].map((e) => e.dataset.name)) ===
              JSON.stringify(want), names);

const online = (page) => waitFor(page, 'status online', () => document.querySelector('#status')?.dataset.state === 'online');

/// Types `text` into the message box and presses Enter (not waiting for the echo).
async function type(page, text) {
  await page.locator('#send:not([disabled])').waitFor({ timeout: STEP_TIMEOUT_MS });
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

async function send(page, text) {
  await type(page, text);
  await waitFor(page, 'message box cleared after send', () => document.querySelector('#text').value === '');
}

/// Opens `room` as a first-time visitor and joins under `name` with the name form.
async function enter(page, server, room, name) {
  await page.goto(`${server.base}/#${room}`);
  await page.locator('#name-form').waitFor({ timeout: STEP_TIMEOUT_MS });
  await page.fill('#name', name);
  await page.press('#name', 'Enter');
  await online(page);
  await notice(page, `Connected to #${room} as ${name}`);
}

/// Makes the page believe its tab is hidden (or visible again).
const setHidden = (page, hidden) => page.evaluate((h) => {
  Object.defineProperty(document, 'visibilityState', { value: h ? 'hidden' : 'visible', configurable: true });
  Object.defineProperty(document, 'hidden', { value: h, configurable: true });
  document.dispatchEvent(new Event('visibilitychange'));
}, hidden);

// Nothing sticks out sideways: the page is no wider than the viewport, no
// element reaches past its edges, and no element's content is wider than the
// element (which `overflow: hidden` would clip out of sight), except where the
// page cuts text off on purpose with an ellipsis.
const noHorizontalOverflow = async (page, when) => {
  const found = await page.evaluate(() => {
    const inner = window.innerWidth;
    const bad = [];
    const width = Math.max(document.documentElement.scrollWidth, document.body.scrollWidth);
    if (width > inner) bad.push(`page is ${width}px wide`);
    for (const e of document.body.querySelectorAll('*')) {
      if (!e.getClientRects().length || e.closest('.sr-only') || e.matches('input, textarea, script, style')) continue;
      const r = e.getBoundingClientRect();
      const name = e.id ? '#' + e.id : e.tagName.toLowerCase() + (e.className ? '.' + e.className : '');
      if (r.left < -1 || r.right > inner + 1) bad.push(`${name} spans ${Math.round(r.left)}..${Math.round(r.right)}px`);
      if (getComputedStyle(e).textOverflow !== 'ellipsis' && e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0)
        bad.push(`${name} holds ${e.scrollWidth}px in ${e.clientWidth}px`);
    }
    return bad.slice(0, 5);
  });
  assert.deepEqual(found, [], `${page.who}: ${when}: horizontal overflow in a ${page.viewportSize().width}px viewport`);
};

// ----------------------------------------------------------------- tests ----
// Each test gets `t`: t.user(name, contextOptions) opens a fresh browser
// context (empty localStorage, as a first-time visitor) and its page; the
// page's sockets and sent frames are recorded as page.sockets and page.sent.
//
// Marked NEEDS-SERVER: assertions that need the server side of the issue
// (welcome.members, welcome.limits, /nick and rename, notice frames,
// --max-message-rate, --member-list-limit).
const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('name_asked_before_connecting_and_one_join_notice', async (t, { big }) => {
  const room = 'first-visit';
  const bob = await t.user('bob');
  await enter(bob, big, room, 'bob');

  const ann = await t.user('ann');
  await ann.goto(`${big.base}/#${room}`);
  await ann.locator('#name').waitFor();
  assert.ok(await ann.locator('#name').isVisible(), 'the name form is shown first');
  assert.ok(await ann.locator('#log').isHidden(), 'the chat waits behind the name form');
  await sleep(400);
  assert.equal(ann.sockets.length, 0, 'no connection before a name is chosen');
  assert.equal(await ann.locator('#status').getAttribute('data-state'), 'idle');

  // Blank is no name: the form says so and still does not connect.
  await ann.fill('#name', '   ');
  await ann.press('#name', 'Enter');
  await waitFor(ann, 'name hint says why', () => document.querySelector('#name-hint').classList.contains('error'));
  assert.equal(ann.sockets.length, 0, 'a blank name does not connect');

  await ann.fill('#name', 'ann');
  await ann.click('#name-ok');
  await online(ann);
  await notice(ann, `Connected to #${room} as ann`);
  const url = new URL(ann.sockets[0].url());
  assert.equal(url.pathname, `/chat/${room}`);
  assert.equal(url.searchParams.get('name'), 'ann');
  assert.equal(url.protocol, 'ws:', 'ws: for a page served over http:');
  assert.ok(await ann.locator('#name-form').isHidden(), 'the form is gone once joined');
  assert.match(await ann.textContent('#me'), /ann/, 'the change-name control shows the name');

  await notice(bob, 'ann joined');
  await sleep(300);
  const comings = (await notices(bob)).filter((n) => / (joined|left|is now) /.test(' ' + n + ' '));
  assert.deepEqual(comings, ['ann joined'], 'bob sees one notice, under the chosen name');
  assert.equal(ann.sockets.length, 1, 'one connection');
  assert.equal(await ann.evaluate(() => localStorage.getItem('loopchat.name')), 'ann');

  // Next visit: the stored name, no form.
  await ann.reload();
  await online(ann);
  await notice(ann, `Connected to #${room} as ann`);
  assert.ok(await ann.locator('#name-form').isHidden(), 'a returning visitor is not asked again');
});

test('rename_sends_nick_on_the_open_connection', async (t, { big }) => {
  const room = 'rename';
  const ann = await t.user('ann');
  const bob = await t.user('bob');
  await enter(ann, big, room, 'ann');
  await enter(bob, big, room, 'bob');
  await notice(ann, 'bob joined');

  await ann.click('#me');
  await ann.locator('#name-form').waitFor();
  assert.equal(await ann.inputValue('#name'), 'ann', 'the form starts with the current name');
  await ann.fill('#name', 'annie');
  await ann.press('#name', 'Enter');

  assert.ok(ann.sent.includes('/nick annie'), `ann sent /nick: ${JSON.stringify(ann.sent)}`);
  // NEEDS-SERVER: the rename notice.
  await notice(bob, 'ann is now annie');
  await notice(ann, 'ann is now annie');
  await membersAre(bob, ['annie', 'bob']);
  await membersAre(ann, ['annie', 'bob']);
  await sleep(300);
  const comings = (await notices(bob)).filter((n) => / (joined|left|is now) /.test(' ' + n + ' '));
  assert.deepEqual(comings, ['ann is now annie'], 'bob sees one rename notice, no leave and join');
  assert.equal(ann.sockets.length, 1, 'no reconnect for a rename');
  assert.ok(!ann.sockets[0].isClosed(), 'the connection stays open');
  assert.match(await ann.textContent('#me'), /annie/);
  assert.equal(await ann.evaluate(() => localStorage.getItem('loopchat.name')), 'annie', 'the new name is remembered');

  await send(ann, 'new name, same me');
  await message(bob, 'annie', 'new name, same me');
  assert.equal(await ann.locator('#log .msg.own').count(), 1, 'still marked as ann\'s own');

  // A name the server refuses: said to ann alone, styled as a server notice.
  await send(ann, '/nick \u0001');
  await waitFor(ann, 'bad_name notice', () => !!document.querySelector('#log .notice.alert[data-code="bad_name"]'));
  await sleep(200);
  assert.equal((await notices(bob)).filter((n) => n.includes('is now')).length, 1, 'bob saw no second rename');

  // The next visit connects under the new name.
  await ann.reload();
  await notice(ann, `Connected to #${room} as annie`);
  assert.equal(new URL(ann.sockets.at(-1).url()).searchParams.get('name'), 'annie');
});

test('member_list_shows_names_and_follows_join_and_leave', async (t, { big, small }) => {
  const room = 'members';
  const ann = await t.user('ann');
  const bob = await t.user('bob');
  await enter(ann, big, room, 'ann');
  await enter(bob, big, room, 'bob');
  // NEEDS-SERVER: welcome.members (bob's list starts from it).
  await membersAre(bob, ['ann', 'bob']);
  await membersAre(ann, ['ann', 'bob']);
  assert.match(await bob.textContent('#member-list li[data-you]'), /bob \(you\)/);

  const carol = await t.user('carol');
  await enter(carol, big, room, 'carol');
  await membersAre(carol, ['ann', 'bob', 'carol']);
  await membersAre(ann, ['ann', 'bob', 'carol']);
  await membersAre(bob, ['ann', 'bob', 'carol']);
  assert.equal(await ann.getAttribute('#online', 'data-count'), '3');

  await carol.context().close();
  await membersAre(ann, ['ann', 'bob']);
  await membersAre(bob, ['ann', 'bob']);

  // A room over --member-list-limit (1 on the small server): the count and
  // why there are no names; joins and leaves come as presence notices.
  const dee = await t.user('dee');
  const eve = await t.user('eve');
  await enter(dee, small, 'crowd', 'dee');
  await enter(eve, small, 'crowd', 'eve');
  await waitFor(eve, 'too many to list', () => /2 people: too many to list/.test(document.querySelector('#member-note').textContent));
  assert.equal(await eve.locator('#member-list li').count(), 0);
  await notice(dee, 'eve joined');            // from a presence notice
  await membersAre(dee, ['dee', 'eve']);      // every arrival was named, so dee's list holds
  assert.ok(!(await notices(eve)).some((n) => n.includes('joined')), 'eve is not told of her own arrival');
  await eve.context().close();
  await notice(dee, 'eve left');
  await membersAre(dee, ['dee']);
  assert.equal(await dee.getAttribute('#online', 'data-count'), '1');
});

test('presence_notices_name_a_few_and_count_the_rest', async (t, { big }) => {
  const ann = await t.user('ann');
  await enter(ann, big, 'presence', 'ann');
  const said = await ann.evaluate(() => {
    const p = (...names) => names.map((name, i) => ({ id: 1000 + i, name }));
    const frames = [
      { type: 'presence', online: 3, joined: p('bob', 'cy'), left: [], more_joined: 0, more_left: 0, ts: 1 },
      { type: 'presence', online: 30, joined: p('dan', 'eve', 'fay', 'gus'), left: p('bob'), more_joined: 23, more_left: 0, ts: 2 },
      { type: 'presence', online: 5, joined: [], left: [], more_joined: 0, more_left: 25, ts: 3 },
    ];
    for (const f of frames) window.loopchat.handle(JSON.stringify(f));
    return [...document.querySelectorAll('#log .notice')].slice(-3).map((e) => e.textContent);
  });
  assert.deepEqual(said, ['bob and cy joined', 'dan, eve, fay and 24 more joined; bob left', '25 people left']);
  assert.equal(await ann.getAttribute('#online', 'data-count'), '5');
  assert.match(await ann.textContent('#member-note'), /5 people: too many to list/, 'unnamed arrivals end the list');
});

test('links_are_http_and_https_only', async (t, { big }) => {
  const room = 'links';
  const ann = await t.user('ann');
  const bob = await t.user('bob');
  await enter(ann, big, room, 'ann');
  await enter(bob, big, room, 'bob');

  const text = 'see https://example.com/a?b=1, or (http://example.org/wiki/Foo_(bar)). Not javascript:alert(1) nor data:text/html,x';
  await send(ann, text);
  await message(bob, 'ann', text);
  const links = await bob.$$eval('#log .msg .text a', (as) => as.map((a) => ({
    href: a.getAttribute('href'), text: a.textContent, rel: a.rel, target: a.target,
  })));
  assert.deepEqual(links, [
    { href: 'https://example.com/a?b=1', text: 'https://example.com/a?b=1', rel: 'noopener noreferrer', target: '_blank' },
    { href: 'http://example.org/wiki/Foo_(bar)', text: 'http://example.org/wiki/Foo_(bar)', rel: 'noopener noreferrer', target: '_blank' },
  ]);

  await send(ann, 'javascript:alert(document.domain)//https');
  await message(bob, 'ann', 'javascript:alert(document.domain)//https');
  const hrefs = await bob.$$eval('#log a', (as) => as.map((a) => a.getAttribute('href')));
  assert.ok(hrefs.every((h) => /^https?:\/\//.test(h)), `only http(s) links: ${hrefs}`);
  assert.equal(hrefs.length, 2);
});

test('html_in_a_message_is_text', async (t, { big }) => {
  const room = 'html';
  const ann = await t.user('ann');
  const bob = await t.user('bob');
  await enter(ann, big, room, 'ann');
  await enter(bob, big, room, 'bob');

  const evil = ['<img src=x onerror="document.title=\'pwned\'">', '<b>bold</b> <a href="javascript:alert(1)">x</a>'];
  for (const text of evil) {
    await send(ann, text);
    await message(bob, 'ann', text);
  }
  await sleep(300);     // time for a would-be onerror to fire
  assert.equal(await bob.locator('#log img, #log b, #log a').count(), 0, 'markup was created from a message');
  assert.notEqual(await bob.title(), 'pwned');
  assert.deepEqual(t.seen.dialogs, []);
});

test('shift_enter_is_a_line_break_that_others_see', async (t, { big }) => {
  const room = 'lines';
  const ann = await t.user('ann');
  const bob = await t.user('bob');
  await enter(ann, big, room, 'ann');
  await enter(bob, big, room, 'bob');

  await ann.click('#text');
  await ann.keyboard.type('line one');
  await ann.keyboard.press('Shift+Enter');
  await ann.keyboard.type('line two');
  assert.equal(await ann.inputValue('#text'), 'line one\nline two', 'Shift+Enter did not send');
  assert.deepEqual(ann.sent, [], 'nothing sent before Enter');
  await ann.keyboard.press('Enter');
  await message(bob, 'ann', 'line one\nline two');

  const shown = await bob.$eval('#log .msg .text', (e) => ({
    whiteSpace: getComputedStyle(e).whiteSpace,
    innerText: e.innerText,
    lines: Math.round(e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight)),
  }));
  assert.match(shown.whiteSpace, /pre-wrap/);
  assert.equal(shown.innerText, 'line one\nline two', 'rendered as two lines');
  assert.equal(shown.lines, 2);
});

test('times_show_the_date_when_not_today', async (t, { big }) => {
  const ann = await t.user('ann');   // locale en-GB, time zone UTC (see t.user)
  await enter(ann, big, 'times', 'ann');

  const now = Date.UTC(2024, 10, 22, 12, 30);
  const fmt = (ts) => ann.evaluate(([ts, now]) => window.loopchat.formatTime(ts, now), [ts, now]);
  assert.equal(await fmt(now - 3600_000), '11:30', 'today: the time alone');
  assert.equal(await fmt(now - 86_400_000), '21 Nov, 12:30', 'yesterday: with the date');
  assert.equal(await fmt(Date.UTC(2023, 4, 1, 8, 5)), '1 May 2023, 08:05', 'another year: with the year');

  await send(ann, 'what time is it?');
  await message(ann, 'ann', 'what time is it?');
  const time = await ann.$eval('#log .msg time', (e) => ({ datetime: e.dateTime, text: e.textContent }));
  assert.ok(Math.abs(Date.parse(time.datetime) - Date.now()) < 60_000, `datetime is ISO and now: ${time.datetime}`);
  assert.match(time.datetime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.match(time.text, /^\d\d:\d\d$/, 'a message from today shows the time alone');
  // One item a screen reader reads as "ann (you), 12:30: what time is it?".
  const spoken = await ann.$eval('#log .msg', (li) =>
    `${li.closest('[role=log]')?.getAttribute('aria-live')} ${li.parentElement.tagName} ${li.tagName} ${li.textContent}`);
  assert.match(spoken, /^polite OL LI ann \(you\), \d\d:\d\d: what time is it\?$/);
});

test('scrolled_up_reader_gets_a_new_messages_cue', async (t, { big }) => {
  const room = 'scroll';
  const ann = await t.user('ann');
  const bob = await t.user('bob', { viewport: { width: 700, height: 420 } });
  await enter(ann, big, room, 'ann');
  await enter(bob, big, room, 'bob');
  for (let i = 1; i <= 12; i++) {
    await send(ann, `message ${i}`);
    await sleep(60);      // stay well under the default flood limit
  }
  await message(bob, 'ann', 'message 12');
  assert.ok(await bob.locator('#new-messages').isHidden(), 'no cue while following the log');

  await bob.$eval('#log', (l) => { l.scrollTop = 0; });
  await sleep(100);
  await send(ann, 'are you there?');
  await message(bob, 'ann', 'are you there?');
  await bob.locator('#new-messages').waitFor({ state: 'visible' });
  assert.match(await bob.textContent('#new-messages'), /1 new message/);
  assert.equal(await bob.$eval('#log', (l) => l.scrollTop), 0, 'the reader keeps their place');

  await bob.click('#new-messages');
  const gap = await bob.$eval('#log', (l) => l.scrollHeight - l.scrollTop - l.clientHeight);
  assert.ok(gap < 2, `scrolled to the newest message (gap ${gap}px)`);
  assert.ok(await bob.locator('#new-messages').isHidden(), 'cue gone after use');
});

test('unread_count_in_the_title_while_hidden', async (t, { big }) => {
  const room = 'unread';
  const ann = await t.user('ann');
  const bob = await t.user('bob');
  await enter(ann, big, room, 'ann');
  await enter(bob, big, room, 'bob');
  assert.equal(await bob.title(), `#${room} · loopchat`);

  await setHidden(bob, true);
  await setHidden(ann, true);     // as if she sent from another window
  for (const text of ['one', 'two', 'three']) await send(ann, text);
  await message(bob, 'ann', 'three');
  await message(ann, 'ann', 'three');
  assert.equal(await bob.title(), `(3) #${room} · loopchat`);
  assert.equal(await ann.title(), `#${room} · loopchat`, 'own messages are not unread');

  await setHidden(bob, false);
  assert.equal(await bob.title(), `#${room} · loopchat`, 'cleared when visible');
});

test('over_long_message_is_refused_and_kept', async (t, { big }) => {
  const room = 'long';
  const ann = await t.user('ann');
  const bob = await t.user('bob');
  await enter(ann, big, room, 'ann');
  await enter(bob, big, room, 'bob');

  // NEEDS-SERVER: welcome.limits.max_message_bytes (1024 from --max-chat-message-size 1KiB).
  // 600 characters, 1200 bytes: the limit is on UTF-8 bytes, not characters.
  const long = 'é'.repeat(600);
  await ann.fill('#text', long);
  await waitFor(ann, 'byte counter', () => !document.querySelector('#counter').hidden);
  assert.equal(await ann.textContent('#counter'), '1,200 / 1,024 bytes');
  assert.ok(await ann.$eval('#counter', (e) => e.classList.contains('over')));
  await ann.press('#text', 'Enter');
  await ann.locator('#compose-error').waitFor({ state: 'visible' });
  assert.match(await ann.textContent('#compose-error'), /Too long to send: 1,200 bytes, the limit is 1,024/);
  assert.equal(await ann.inputValue('#text'), long, 'the text stays in the box');
  assert.equal(ann.sent.length, 0, 'nothing was sent');
  await sleep(300);
  assert.ok(!ann.sockets[0].isClosed(), 'the connection stays open');
  assert.equal(await ann.getAttribute('#status', 'data-state'), 'online');

  // Exactly at the limit goes through; the error goes once the text fits.
  const fits = 'é'.repeat(512);
  await ann.fill('#text', fits);
  assert.ok(await ann.locator('#compose-error').isHidden(), 'error cleared once it fits');
  assert.equal(await ann.textContent('#counter'), '1,024 / 1,024 bytes', 'counter shown near the limit');
  await ann.press('#text', 'Enter');
  await message(bob, 'ann', fits);
  assert.equal(await ann.inputValue('#text'), '');
  assert.ok(await ann.locator('#counter').isHidden(), 'no counter for an empty box');
  assert.equal(ann.sockets.length, 1, 'never reconnected');
});

test('blank_messages_are_not_sent', async (t, { big }) => {
  const ann = await t.user('ann');
  await enter(ann, big, 'blank', 'ann');
  for (const blank of ['', '   ', ' \n\t \n']) {
    await ann.fill('#text', blank);
    await ann.press('#text', 'Enter');
  }
  await send(ann, 'not blank');
  await message(ann, 'ann', 'not blank');
  assert.deepEqual(ann.sent, ['not blank']);
});

test('rate_limited_notice_is_shown', async (t, { small }) => {
  const ann = await t.user('ann');
  await enter(ann, small, 'flood', 'ann');
  // NEEDS-SERVER: --max-message-rate 1 (bursts of 2), then a rate_limited notice.
  for (let i = 1; i <= 4; i++) await type(ann, `quick ${i}`);
  await waitFor(ann, 'rate_limited notice', () => !!document.querySelector('#log .notice.alert[data-code="rate_limited"]'));
  assert.ok(await ann.$eval('#log .notice.alert[data-code="rate_limited"]', (e) => e.textContent.length > 0));
  assert.equal(await ann.getAttribute('#status', 'data-state'), 'online');
});

test('phone_width_collapses_members_and_does_not_overflow', async (t, { big }) => {
  const room = 'phone';
  const ann = await t.user('ann');
  const pat = await t.user('pat', { viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const longName = 'Bartholomew-Montgomery-Smithson';
  await enter(ann, big, room, longName);
  await pat.goto(`${big.base}/#${room}`);
  await noHorizontalOverflow(pat, 'name form');
  await pat.fill('#name', 'pat');
  await pat.press('#name', 'Enter');
  await online(pat);

  for (const text of ['https://example.com/' + 'very-long-path-segment/'.repeat(8), 'x'.repeat(300), 'short\none']) {
    await send(ann, text);
    await message(pat, longName, text);
  }
  await send(pat, 'from my phone');
  assert.ok(await pat.locator('#members').isHidden(), 'member list folded away on a phone');
  assert.equal(await pat.getAttribute('#members-toggle', 'aria-expanded'), 'false');
  await noHorizontalOverflow(pat, 'chat');

  await pat.tap('#members-toggle');
  await pat.locator('#members').waitFor({ state: 'visible' });
  assert.equal(await pat.getAttribute('#members-toggle', 'aria-expanded'), 'true');
  // NEEDS-SERVER: welcome.members.
  await membersAre(pat, [longName, 'pat']);
  await noHorizontalOverflow(pat, 'member list open');
  mkdirSync(OUT, { recursive: true });
  await pat.screenshot({ path: path.join(OUT, 'page-phone.png') });

  await pat.tap('#me');
  await noHorizontalOverflow(pat, 'change-name form');
  assert.ok(await ann.locator('#members').isVisible(), 'member list open beside the log on a desktop');
});

test('screenshot_of_the_page', async (t, { big }) => {
  const room = 'rust';
  const size = { viewport: { width: 900, height: 560 } };
  const ann = await t.user('ann', size);
  const bob = await t.user('bob', size);
  const cy = await t.user('cy', size);
  await enter(ann, big, room, 'ann');
  await enter(bob, big, room, 'bob');
  await enter(cy, big, room, 'cy');
  await notice(ann, 'cy joined');
  const lines = [
    [bob, 'Morning! The new build is up.'],
    [ann, 'Nice. Release notes?'],
    [bob, 'https://example.com/loopchat/releases'],
    [cy, 'One poll loop, zero threads.\nStill fast.'],
    [ann, '<img src=x onerror=alert(1)> stays text.'],
  ];
  for (const [page, text] of lines) await send(page, text);
  await message(ann, 'ann', lines.at(-1)[1]);
  await sleep(100);
  mkdirSync(OUT, { recursive: true });
  await ann.screenshot({ path: path.join(OUT, 'page.png') });
  if (process.env.UPDATE_SCREENSHOT === '1') {
    copyFileSync(path.join(OUT, 'page.png'), path.join(HERE, 'screenshot.png'));
    log('updated tests/browser/screenshot.png');
  }
});

function watch(page, who, sink) {
  page.on('dialog', (d) => { sink.dialogs.push(`${who}: ${d.type()} ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => sink.errors.push(`${who}: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') sink.console.push(`${who}: ${m.text()}`); });
}

// ------------------------------------------------------------------ main ----
async function run(browser, name, fn, servers) {
  const contexts = [];
  const pages = [];
  const seen = { dialogs: [], errors: [], console: [] };
  const t = {
    seen,
    async user(who, options = {}) {
      const context = await browser.newContext({
        viewport: { width: 900, height: 600 }, locale: 'en-GB', timezoneId: 'UTC', ...options,
      });
      contexts.push(context);
      const page = await context.newPage();
      page.who = who;
      page.sockets = [];
      page.sent = [];
      page.on('websocket', (ws) => {
        page.sockets.push(ws);
        ws.on('framesent', (f) => page.sent.push(f.payload));
      });
      watch(page, who, seen);
      pages.push(page);
      return page;
    },
  };
  try {
    await fn(t, servers);
    assert.deepEqual(seen.errors, [], 'uncaught page errors');
    assert.deepEqual(seen.dialogs, [], 'a dialog fired');
  } catch (err) {
    mkdirSync(OUT, { recursive: true });
    for (const page of pages) {
      if (page.isClosed()) continue;
      const file = path.join(OUT, `failure-${name}-${page.who}.png`);
      await page.screenshot({ path: file }).catch(() => {});
      const text = await page.evaluate(() => document.querySelector('#log')?.innerText).catch(() => '?');
      console.error(`--- ${page.who}'s log (screenshot: ${path.relative(REPO, file)}) ---\n${text}`);
    }
    if (seen.errors.length) console.error('page errors:\n  ' + seen.errors.join('\n  '));
    if (seen.console.length) console.error('console errors:\n  ' + seen.console.join('\n  '));
    throw err;
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
  }
}

async function main() {
  // big: 1 KiB messages (for the byte limit), the default flood limit.
  // small: a flood limit of 1/s and member lists only up to 1 member.
  const big = await startServer(['--max-chat-message-size', '1KiB']);
  const small = await startServer(['--max-message-rate', '1', '--member-list-limit', '1']);
  const browser = await launchChromium(CHROMIUM);
  log(`chromium ${browser.version()}`);
  const failed = [];
  try {
    for (const { name, fn } of tests) {
      if (!name.includes(ONLY)) continue;
      try {
        await run(browser, name, fn, { big, small });
        log(`ok - ${name}`);
      } catch (err) {
        failed.push(name);
        log(`FAIL - ${name}: ${err.stack || err}`);
      }
    }
  } finally {
    await browser.close().catch(() => {});
    for (const s of [...servers]) {
      if (failed.length) console.error(`--- server ${s.args.join(' ')} output (tail) ---\n` + s.output.join('').slice(-4000));
      await stopServer(s);
    }
  }
  if (failed.length) throw new Error(`${failed.length} failed: ${failed.join(', ')}`);
}

const watchdog = setTimeout(() => {
  console.error(`FAIL: browser test took longer than ${OVERALL_TIMEOUT_MS / 1000} s`);
  for (const s of servers) console.error(`--- server ${s.args.join(' ')} output ---\n` + s.output.join('').slice(-4000));
  process.exit(1); // the exit hook kills the servers; playwright kills chromium
}, OVERALL_TIMEOUT_MS);

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

try {
  await main();
  log('PASS');
} catch (err) {
  console.error(`FAIL: ${err.stack || err}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
}
