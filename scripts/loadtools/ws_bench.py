#!/usr/bin/env python3
"""Small bounded WebSocket load script for loopchat (pip install websockets).

  echo  : C connections to /echo, each does N sequential round trips (send, await echo, compare).
  relay : R receivers join /relay/ROOM, then one sender (also a member) sends N messages;
          every member (sender included) must receive all N verbatim, in order.
"""
import argparse, asyncio, statistics, time
import websockets

async def echo_client(url, n, lat):
    async with websockets.connect(url, max_queue=None) as ws:
        for i in range(n):
            msg = f"echo {i} " + "x" * 32
            t = time.perf_counter()
            await ws.send(msg)
            got = await ws.recv()
            lat.append(time.perf_counter() - t)
            if got != msg:
                raise RuntimeError(f"mismatch: {got!r} != {msg!r}")
    return n

async def run_echo(a):
    url = f"ws://{a.host}/echo"
    lat = []
    t0 = time.perf_counter()
    res = await asyncio.wait_for(
        asyncio.gather(*(echo_client(url, a.n, lat) for _ in range(a.c)), return_exceptions=True), a.timeout)
    dt = time.perf_counter() - t0
    errs = [r for r in res if isinstance(r, Exception)]
    ok = sum(r for r in res if isinstance(r, int))
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    print(f"echo: {a.c} connections x {a.n} round trips -> {ok} echoes verified, {len(errs)} failed connections")
    print(f"  wall {dt:.2f} s, {ok/dt:.0f} round trips/s ({2*ok/dt:.0f} messages/s both ways)")
    print(f"  latency ms: mean {statistics.mean(lat)*1000:.2f}  p50 {q(.5):.2f}  p99 {q(.99):.2f}  max {lat[-1]*1000:.2f}")
    for e in errs[:3]:
        print("  error:", repr(e))

async def run_relay(a):
    url = f"ws://{a.host}/relay/{a.room}"
    expected = [f"fan-out {i} " + "y" * 32 for i in range(a.n)]
    receivers = [await websockets.connect(url, max_queue=None) for _ in range(a.r)]
    sender = await websockets.connect(url, max_queue=None)
    await asyncio.sleep(0.2)  # joins are processed before the first message arrives

    async def collect(ws):
        got = []
        while len(got) < a.n:
            got.append(await ws.recv())
        return got

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(collect(ws)) for ws in receivers + [sender]]
    for m in expected:
        await sender.send(m)
    res = await asyncio.wait_for(asyncio.gather(*tasks), a.timeout)
    dt = time.perf_counter() - t0
    exact = sum(1 for got in res if got == expected)
    total = sum(len(got) for got in res)
    print(f"relay: {a.r} receivers + 1 sender in /relay/{a.room}, {a.n} messages sent")
    print(f"  {exact}/{len(res)} members got all {a.n} verbatim and in order; {total} deliveries in {dt:.2f} s "
          f"({total/dt:.0f} deliveries/s)")
    for ws in receivers + [sender]:
        await ws.close()

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["echo", "relay"])
    p.add_argument("--host", default="127.0.0.1:9001")
    p.add_argument("-c", type=int, default=100, help="echo: connections")
    p.add_argument("-r", type=int, default=50, help="relay: receivers")
    p.add_argument("-n", type=int, default=100, help="messages per connection (echo) / sent (relay)")
    p.add_argument("--room", default="bench")
    p.add_argument("--timeout", type=float, default=25)
    a = p.parse_args()
    asyncio.run(run_echo(a) if a.mode == "echo" else run_relay(a))
