# locust has no WebSocket user built in; this is a ~20-line one on websocket-client.
import time, websocket
from locust import User, task, constant

class EchoUser(User):
    host = "ws://127.0.0.1:9001"
    wait_time = constant(0)

    def on_start(self):
        self.ws = websocket.create_connection(self.host + "/echo")
        self.n = 0

    def on_stop(self):
        self.ws.close()

    @task
    def echo(self):
        self.n += 1
        msg = f"echo {self.n}"
        t = time.perf_counter()
        exc = None
        try:
            self.ws.send(msg)
            if self.ws.recv() != msg:
                exc = AssertionError("echo mismatch")
        except Exception as e:
            exc = e
        self.environment.events.request.fire(request_type="WS", name="/echo round trip",
            response_time=(time.perf_counter() - t) * 1000, response_length=len(msg),
            exception=exc, context={})
