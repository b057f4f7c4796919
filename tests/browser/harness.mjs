// What both browser scripts (chat.test.mjs, page.test.mjs) need besides their
// scenarios: a free loopback port, a probe for a listening server, a sleep, and
// Debian's chromium launched the one way this machine allows (see the README,
// "Why playwright-core and Debian's chromium", for the flags).
import net from 'node:net';
import { chromium } from 'playwright-core';

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => { s.destroy(); resolve(ok); };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(500, () => done(false));
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Launches `executablePath` headless (HEADED=1 shows it), with `extraArgs`.
export function launchChromium(executablePath, extraArgs = []) {
  return chromium.launch({
    executablePath,
    headless: process.env.HEADED !== '1',
    timeout: 20_000,
    args: [
      ...(process.env.HEADED === '1' ? [] : ['--headless']),
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...extraArgs,
    ],
  });
}
