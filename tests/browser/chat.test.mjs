// End-to-end test of static/index.html in a real browser (Debian's chromium,
// driven by playwright-core). Run via `cargo test --test browser`, or directly:
//
//   LOOPCHAT_BIN=target/release/loopchat node tests/browser/chat.test.mjs
//
// Environment:
//   LOOPCHAT_BIN       server binary (required); this script starts, kills and
//                      restarts it itself to test reconnecting
//   CHROMIUM           browser binary (default /usr/bin/chromium)
//   UPDATE_SCREENSHOT  1 = page.test.mjs writes tests/browser/screenshot.png (for the
//                      README); add LOOPCHAT_SCREENSHOT_FROM=chat to take it from here
//   BROWSER_OUT        where screenshots go (default <repo>/target/browser)
//   HEADED             1 = show the browser window (needs a display)
//   LOOPCHAT_ARGS      extra server arguments, split on spaces; e.g.
//                      "--static-dir static" tests the page without a rebuild
//   LOOPCHAT_TLS_CERT  with LOOPCHAT_TLS_KEY: PEM files for a second pass over
//                      https (chromium with --ignore-certificate-errors for that
//                      pass only), where two users chat over wss://
//
// After the main scenario (permessage-deflate off: ws.extensions is ""), a
// second server is started with --permessage-deflate, where two users chat a
// 2 KiB message that goes both ways compressed (ws.extensions and /metrics).

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
const OVERALL_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 10_000;
const ROOM = 'demo';
const EXTRA_ARGS = (process.env.LOOPCHAT_ARGS || '').split(' ').filter(Boolean);

if (!BIN) {
  console.error('LOOPCHAT_BIN is not set (path to the loopchat server binary)');
  process.exit(2);
}

// ---------------------------------------------------------------- server ----
let server = null;            // { child, output: string[], exited: Promise }


async function startServer(port, args = []) {
  // The port was just freed (or the previous server just died), so retry a
  // few times in case the bind loses a race.
  for (let attempt = 1; ; attempt++) {
    const child = spawn(BIN, ['--addr', `127.0.0.1:${port}`, ...EXTRA_ARGS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const output = [];
    const keep = (chunk) => { output.push(chunk.toString()); if (output.length > 400) output.shift(); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let exitInfo = null;
    const exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => { exitInfo = { code, signal }; resolve(exitInfo); });
      child.once('error', (err) => { exitInfo = { error: err }; resolve(exitInfo); });
    });
    server = { child, output, exited };

    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !exitInfo) {
      if (await canConnect(port)) {
        log(`server pid ${child.pid} listening on 127.0.0.1:${port}`);
        return;
      }
      await sleep(50);
    }
    if (exitInfo && attempt < 5) {
      log(`server exited early (${JSON.stringify(exitInfo)}), retrying bind`);
      await sleep(300);
      continue;
    }
    throw new Error(`server did not accept TCP on port ${port} (${JSON.stringify(exitInfo)})\n` + output.join(''));
  }
}

async function stopServer(signal = 'SIGTERM') {
  if (!server) return;
  const { child, exited } = server;
  server = null;
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

// Synchronous last resort so no server outlives this script.
process.on('exit', () => { if (server) server.child.kill('SIGKILL'); });

// --------------------------------------------------------------- helpers ----
const t0 = Date.now();
function log(msg) { console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`); }
function ok(msg) { log(`ok - ${msg}`); }

async function waitFor(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: STEP_TIMEOUT_MS, polling: 50 });
  } catch (e) {
    throw new Error(`timed out waiting for: ${what}`);
  }
}

const status = (page, state) =>
  waitFor(page, `#status = ${state}`, (s) => document.querySelector('#status')?.dataset.state === s, state);

const onlineCount = (page, n) =>
  waitFor(page, `#online count = ${n}`, (n) => document.querySelector('#online')?.dataset.count === String(n), n);

const notice = (page, text) =>
  waitFor(page, `notice containing "${text}"`,
    (t) => [...document.querySelectorAll('#log .notice')].some((e) => e.textContent.includes(t)), text);

const message = (page, from, text) =>
  waitFor(page, `message from ${from}: "${text}"`,
    ([f, t]) => [...document.querySelectorAll('#log .msg')].some(
      (m) => m.dataset.from === f && m.querySelector('.text')?.textContent === t), [from, text]);

async function send(page, text) {
  await page.locator('#send:not([disabled])').waitFor({ timeout: STEP_TIMEOUT_MS });
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
  await waitFor(page, 'message field cleared after send', () => document.querySelector('#text').value === '');
}

async function setName(page, name) {
  await page.fill('#name', name);
  await page.press('#name', 'Enter');
}

// The page's current WebSocket is its top-level `let ws` (a classic script), so
// page.evaluate can read it by name.
const extensions = (page) => page.evaluate(() => (ws ? ws.extensions : null));

// One metric's value from the server's /metrics page (0 if absent).
async function metric(base, name) {
  const res = await fetch(base + '/metrics');
  assert.equal(res.status, 200, 'GET /metrics');
  const line = (await res.text()).split('\n').find((l) => l.startsWith(name + ' '));
  return line ? Number(line.slice(name.length + 1)) : 0;
}

// English-like text of exactly `len` bytes (ASCII).
function english(len) {
  const words = ['the', 'server', 'reads', 'every', 'message', 'once', 'and', 'sends', 'it', 'to',
    'each', 'member', 'of', 'the', 'room', 'who', 'is', 'still', 'there', 'when', 'a', 'new', 'frame',
    'arrives', 'from', 'the', 'loop'];
  let s = '';
  for (let i = 0; s.length < len; i++) s += words[(i * 7 + Math.floor(i / 5)) % words.length] + (i % 11 === 10 ? '. ' : ' ');
  return s.slice(0, len - 1) + '.';
}

function watch(page, who, sink) {
  page.on('dialog', (d) => { sink.dialogs.push(`${who}: ${d.type()} ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => sink.errors.push(`${who}: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') sink.console.push(`${who}: ${m.text()}`); });
}

// -------------------------------------------------------------- scenario ----
async function scenario(browser, port) {
  const base = `http://127.0.0.1:${port}`;
  const seen = { dialogs: [], errors: [], console: [] };

  const aliceCtx = await browser.newContext({
    viewport: { width: 760, height: 520 }, locale: 'en-GB', timezoneId: 'UTC',
  });
  const bobCtx = await browser.newContext({
    viewport: { width: 360, height: 640 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  // bob has been here before: his nickname is already in localStorage.
  await bobCtx.addInitScript(() => localStorage.setItem('loopchat.name', 'bob'));
  const alice = await aliceCtx.newPage();
  const bob = await bobCtx.newPage();
  watch(alice, 'alice', seen);
  watch(bob, 'bob', seen);
  const pages = { alice, bob };

  try {
    // alice opens the lobby: the page asks her name before connecting, so the
    // room hears of her once, under that name. Then she switches room.
    const res = await alice.goto(base + '/');
    assert.ok(res && res.ok(), `GET / returned ${res && res.status()}`);
    await setName(alice, 'alice');
    await status(alice, 'online');
    await notice(alice, 'Connected to #lobby as alice');
    ok('alice: page served at /, named herself, connected to the lobby');
    assert.equal(await extensions(alice), '', 'ws.extensions without --permessage-deflate');
    ok('without --permessage-deflate: ws.extensions is ""');

    await alice.fill('#room', ROOM);
    await alice.press('#room', 'Enter');
    await notice(alice, `Connected to #${ROOM} as alice`);
    assert.equal(new URL(alice.url()).hash, `#${ROOM}`);
    await onlineCount(alice, 1);
    ok(`alice: renamed, switched to #${ROOM} (location.hash follows), 1 online`);

    // bob comes straight to the room via the URL hash.
    await bob.goto(`${base}/#${ROOM}`);
    await status(bob, 'online');
    await notice(bob, `Connected to #${ROOM} as bob`);
    assert.equal(await bob.inputValue('#name'), 'bob');
    await onlineCount(bob, 2);
    await onlineCount(alice, 2);
    await notice(alice, 'bob joined');
    ok('bob: joined via /#demo with his stored name; alice sees "bob joined" and 2 online');

    // They chat.
    const lines = [
      ['alice', alice, 'Hi Bob! Is the new build up?'],
      ['bob', bob, 'Yes: one poll loop, zero threads. Très bien!'],
      ['alice', alice, 'Nice. Try to break it.'],
      ['bob', bob, '<img src=x onerror=alert(1)>'],
    ];
    for (const [from, page, text] of lines) {
      await send(page, text);
      await message(alice, from, text);
      await message(bob, from, text);
    }
    ok('both see every message with the sender name');

    for (const [who, page] of Object.entries(pages)) {
      const own = await page.$$eval('#log .msg.own', (els) => els.map((e) => e.dataset.from));
      const others = await page.$$eval('#log .msg:not(.own)', (els) => els.map((e) => e.dataset.from));
      assert.ok(own.length === 2 && own.every((f) => f === who), `${who}: own messages marked: ${own}`);
      assert.ok(others.length === 2 && others.every((f) => f !== who), `${who}: others not marked: ${others}`);
    }
    ok('own messages are marked, others are not');

    await sleep(300); // give a would-be onerror handler time to fire
    for (const [who, page] of Object.entries(pages)) {
      assert.equal(await page.locator('#log img').count(), 0, `${who}: an <img> was created in the log`);
    }
    assert.deepEqual(seen.dialogs, [], 'a dialog fired');
    ok('HTML in a message is shown as literal text (no <img>, no dialog)');

    // The log follows the newest message.
    for (const [who, page] of Object.entries(pages)) {
      const gap = await page.$eval('#log', (l) => l.scrollHeight - l.scrollTop - l.clientHeight);
      assert.ok(gap < 2, `${who}: log is not scrolled to the newest message (gap ${gap}px)`);
    }
    // Nothing sticks out sideways on a 360 px phone.
    const overflow = await bob.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `phone layout overflows horizontally by ${overflow}px`);
    ok('log scrolled to newest; no horizontal overflow at 360 px');

    mkdirSync(OUT, { recursive: true });
    await alice.screenshot({ path: path.join(OUT, 'chat.png') });
    await bob.screenshot({ path: path.join(OUT, 'phone.png') });
    if (process.env.UPDATE_SCREENSHOT === '1' && process.env.LOOPCHAT_SCREENSHOT_FROM === 'chat') {
      copyFileSync(path.join(OUT, 'chat.png'), path.join(HERE, 'screenshot.png'));
      ok('updated tests/browser/screenshot.png');
    }
    ok(`screenshots in ${path.relative(REPO, OUT) || OUT}/ (chat.png, phone.png)`);

    // carol arrives late and gets the room's recent history.
    const carolCtx = await browser.newContext({ viewport: { width: 600, height: 500 } });
    const carol = await carolCtx.newPage();
    watch(carol, 'carol', seen);
    pages.carol = carol;
    await carol.addInitScript(() => localStorage.setItem('loopchat.name', 'carol'));
    await carol.goto(`${base}/#${ROOM}`);
    await notice(carol, `Connected to #${ROOM} as carol`);
    for (const [from, , text] of lines) await message(carol, from, text);
    assert.equal(await carol.locator('#log .msg.own').count(), 0, 'carol: history marked as her own');
    await onlineCount(alice, 3);
    await carolCtx.close();
    delete pages.carol;
    await onlineCount(alice, 2);
    ok('carol: a newcomer gets the history replayed (not marked as hers)');

    // bob leaves.
    await bobCtx.close();
    delete pages.bob;
    await notice(alice, 'bob left');
    await onlineCount(alice, 1);
    ok('closing bob\'s tab: alice sees "bob left" and 1 online');

    // The server dies (no close frame), stays away while a few reconnect
    // attempts fail, and comes back on the same port.
    await stopServer('SIGKILL');
    await status(alice, 'offline');
    await notice(alice, 'Disconnected');
    ok('server killed: alice shows offline');
    await sleep(2000);
    await status(alice, 'offline');
    await startServer(port);
    await status(alice, 'online');
    await notice(alice, `Connected to #${ROOM} as alice`);
    await send(alice, 'back again');
    await message(alice, 'alice', 'back again');
    ok('server restarted: alice reconnected by herself and can send again');

    // A reload keeps the nickname (localStorage) and the room (hash).
    await alice.reload();
    await status(alice, 'online');
    assert.equal(await alice.inputValue('#name'), 'alice');
    assert.equal(await alice.inputValue('#room'), ROOM);
    await notice(alice, `Connected to #${ROOM} as alice`);
    ok('reload: nickname and room remembered');

    assert.deepEqual(seen.errors, [], 'uncaught page errors');
    assert.deepEqual(seen.dialogs, [], 'a dialog fired');
  } catch (err) {
    // Leave evidence behind for whoever reads the CI log.
    mkdirSync(OUT, { recursive: true });
    for (const [who, page] of Object.entries(pages)) {
      const file = path.join(OUT, `failure-${who}.png`);
      await page.screenshot({ path: file }).catch(() => {});
      const text = await page.evaluate(() => document.querySelector('#log')?.innerText).catch(() => '?');
      console.error(`--- ${who}'s log (screenshot: ${file}) ---\n${text}`);
    }
    if (seen.errors.length) console.error('page errors:\n  ' + seen.errors.join('\n  '));
    if (seen.console.length) console.error('console errors:\n  ' + seen.console.join('\n  '));
    throw err;
  }
}

// A second server, with --permessage-deflate: chromium offers the extension,
// gets it, and a 2 KiB message goes in and out compressed.
async function deflateScenario(browser, port) {
  const base = `http://127.0.0.1:${port}`;
  const seen = { dialogs: [], errors: [], console: [] };
  const room = 'squeeze';
  const annCtx = await browser.newContext({ viewport: { width: 600, height: 500 } });
  const benCtx = await browser.newContext({ viewport: { width: 600, height: 500 } });
  await annCtx.addInitScript(() => localStorage.setItem('loopchat.name', 'ann'));
  await benCtx.addInitScript(() => localStorage.setItem('loopchat.name', 'ben'));
  const ann = await annCtx.newPage();
  const ben = await benCtx.newPage();
  watch(ann, 'ann', seen);
  watch(ben, 'ben', seen);
  const pages = { ann, ben };
  try {
    for (const [who, page] of Object.entries(pages)) {
      await page.goto(`${base}/#${room}`);
      await status(page, 'online');
      await notice(page, `Connected to #${room} as ${who}`);
      const agreed = await extensions(page);
      assert.equal(agreed, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
        `${who}: ws.extensions`);
    }
    await onlineCount(ann, 2);
    assert.equal(await metric(base, 'loopchat_deflate_connections'), 2);
    ok('with --permessage-deflate: ws.extensions names permessage-deflate for both; 2 deflate connections');

    const inBefore = await metric(base, 'loopchat_compressed_messages_in_total');
    const outBefore = await metric(base, 'loopchat_compressed_frames_out_total');
    const callsBefore = await metric(base, 'loopchat_compress_calls_total');
    const long = english(2048);
    await send(ann, long);
    await message(ann, 'ann', long);
    await message(ben, 'ann', long);
    const reply = 'Got it: ' + english(2040);
    await send(ben, reply);
    await message(ann, 'ben', reply);
    await message(ben, 'ben', reply);
    const messagesIn = (await metric(base, 'loopchat_compressed_messages_in_total')) - inBefore;
    const framesOut = (await metric(base, 'loopchat_compressed_frames_out_total')) - outBefore;
    const calls = (await metric(base, 'loopchat_compress_calls_total')) - callsBefore;
    log(`compressed messages in: ${messagesIn}, compressed frames out: ${framesOut}, compress calls: ${calls}`);
    assert.ok(messagesIn > 0, 'chromium sent the 2 KiB messages compressed');
    assert.equal(messagesIn, 2, 'both 2 KiB messages came in compressed');
    assert.ok(framesOut > 0, 'the server sent compressed frames');
    assert.equal(framesOut, 4, 'two broadcasts to two deflate members');
    assert.equal(calls, 2, 'one compression per broadcast');
    ok('a 2 KiB message each way: both see them; /metrics counts compressed messages in and frames out');

    assert.deepEqual(seen.errors, [], 'uncaught page errors');
    assert.deepEqual(seen.dialogs, [], 'a dialog fired');
  } catch (err) {
    mkdirSync(OUT, { recursive: true });
    for (const [who, page] of Object.entries(pages)) {
      const file = path.join(OUT, `failure-deflate-${who}.png`);
      await page.screenshot({ path: file }).catch(() => {});
      const text = await page.evaluate(() => document.querySelector('#log')?.innerText).catch(() => '?');
      console.error(`--- ${who}'s log (screenshot: ${file}) ---\n${text}`);
    }
    if (seen.errors.length) console.error('page errors:\n  ' + seen.errors.join('\n  '));
    if (seen.console.length) console.error('console errors:\n  ' + seen.console.join('\n  '));
    throw err;
  } finally {
    await annCtx.close().catch(() => {});
    await benCtx.close().catch(() => {});
  }
}

// ------------------------------------------------------------ https pass ----
// The same page over https: it must pick wss:// by itself, and two users chat.
async function tlsScenario(browser, port) {
  const base = `https://127.0.0.1:${port}`;
  const seen = { dialogs: [], errors: [], console: [] };
  const sockets = [];
  const pages = {};
  for (const who of ['dana', 'eve']) {
    const ctx = await browser.newContext({ viewport: { width: 600, height: 500 } });
    await ctx.addInitScript((n) => localStorage.setItem('loopchat.name', n), who);
    const page = await ctx.newPage();
    watch(page, who, seen);
    page.on('websocket', (ws) => sockets.push(ws.url()));
    pages[who] = page;
  }
  try {
    for (const [who, page] of Object.entries(pages)) {
      const res = await page.goto(`${base}/#tls`);
      assert.ok(res && res.ok(), `${who}: GET / over https returned ${res && res.status()}`);
      await status(page, 'online');
      await notice(page, `Connected to #tls as ${who}`);
    }
    await onlineCount(pages.dana, 2);
    assert.ok(sockets.length >= 2 && sockets.every((u) => u.startsWith(`wss://127.0.0.1:${port}/chat/tls`)),
      `the page's sockets are wss:// ones: ${sockets}`);
    ok(`https: dana and eve connected to #tls over ${sockets[0].split('?')[0]}`);
    await send(pages.dana, 'Over TLS now?');
    await send(pages.eve, 'Yes: wss all the way.');
    for (const page of Object.values(pages)) {
      await message(page, 'dana', 'Over TLS now?');
      await message(page, 'eve', 'Yes: wss all the way.');
    }
    assert.deepEqual(seen.errors, [], 'uncaught page errors');
    ok('https: both see both messages over wss');
  } catch (err) {
    for (const [who, page] of Object.entries(pages)) {
      const text = await page.evaluate(() => document.querySelector('#log')?.innerText).catch(() => '?');
      console.error(`--- ${who}'s log (https pass) ---\n${text}`);
    }
    if (seen.console.length) console.error('console errors:\n  ' + seen.console.join('\n  '));
    throw err;
  }
}

async function tlsPass() {
  const [cert, key] = [process.env.LOOPCHAT_TLS_CERT, process.env.LOOPCHAT_TLS_KEY];
  if (!cert || !key) { log('https pass skipped (LOOPCHAT_TLS_CERT/LOOPCHAT_TLS_KEY not set)'); return; }
  await stopServer();
  const port = await freePort();
  await startServer(port, ['--tls-cert', cert, '--tls-key', key]);
  const browser = await launchChromium(CHROMIUM, [
    // The certificate was made by the test: this pass only.
    '--ignore-certificate-errors',
  ]);
  try {
    await tlsScenario(browser, port);
  } finally {
    await browser.close().catch(() => {});
  }
}

// ------------------------------------------------------------------ main ----
async function main() {
  const port = await freePort();
  await startServer(port);
  const browser = await launchChromium(CHROMIUM);
  log(`chromium ${browser.version()}`);
  try {
    await scenario(browser, port);
    await stopServer();
    const deflatePort = await freePort();
    await startServer(deflatePort, ['--permessage-deflate']);
    await deflateScenario(browser, deflatePort);
  } finally {
    await browser.close().catch(() => {});
  }
  await tlsPass();
}

const watchdog = setTimeout(() => {
  console.error(`FAIL: browser test took longer than ${OVERALL_TIMEOUT_MS / 1000} s`);
  if (server) { console.error('--- server output ---\n' + server.output.join('')); }
  process.exit(1); // the exit hook kills the server; playwright kills chromium
}, OVERALL_TIMEOUT_MS);

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

try {
  await main();
  await stopServer();
  log('PASS');
  clearTimeout(watchdog);
} catch (err) {
  console.error(`FAIL: ${err.stack || err}`);
  if (server) console.error('--- server output (tail) ---\n' + server.output.join('').slice(-8000));
  await stopServer();
  clearTimeout(watchdog);
  process.exitCode = 1;
}
