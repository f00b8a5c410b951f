"""The agent's link to the broker: a DEALER with Paranoid Pirate heartbeats and reconnects.

``Ready`` goes out on every (re)connect. Any message from the broker proves it alive;
after ``liveness`` silent intervals, or a ``Bye``, the DEALER is closed and re-created
after ``Backoff.next_delay_s()``. Results produced while disconnected wait in an outbox
and follow the next ``Ready``, which then says ``busy`` so that the broker takes the
result before it hands the slot other work.

A result sent on a DEALER whose broker has died sits in the socket's queue, and closing
the socket drops it. So a result stays *unconfirmed* until the broker shows it knows this
connection (anything but ``Bye`` or ``Error`` arrives after it); unconfirmed results go
back to the outbox on disconnect. A result delivered twice is harmless: the broker fences
outcomes by holder and attempt and drops the copy as stale.

What the agent sends in one loop turn goes out at the end of it (``flush``), several
messages as one bundle (``broker.bundle``); bundles from the broker are read message by
message.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Final

import zmq

from broker.addresses import endpoints
from broker.bundle import messages_in, pack
from broker.errors import ProtocolError
from broker.liveness import Backoff, Liveness, heartbeat_interval_s
from broker.protocol import Bye, Done, Error, Failed, Heartbeat, Message, Ready, decode, encode
from broker.security import ClientKeys, configure_client

logger = logging.getLogger(__name__)

DRAIN_LIMIT: Final = 100
LINGER_MS: Final = 500


class BrokerConnection:
    """A DEALER to the broker's workers endpoint that keeps itself alive."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], poller: zmq.Poller,
                 broker: str, ready: Callable[[], Ready],
                 curve: ClientKeys | None = None,
                 on_lost: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.context = context
        self.curve = curve
        self.poller = poller
        self.broker = broker
        self.ready = ready
        self.on_lost = on_lost  # called when the DEALER is dropped: held work may be re-run
        self.dealer: zmq.Socket[bytes] | None = None
        self.liveness = Liveness(heartbeat_interval_s())
        self.backoff = Backoff()
        self.reconnect_at: float | None = None
        self.heard = False  # since the last connect
        self.ever_heard = False
        self.outbox: list[Done | Failed] = []
        self.unconfirmed: list[Done | Failed] = []  # sent, not yet followed by proof of life
        self.sending: list[list[bytes]] = []  # this turn's messages, encoded: ``flush`` sends them

    def connect(self, now: float) -> None:
        """Create the DEALER, send ``Ready``, then whatever results wait in the outbox."""
        dealer = self.context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, LINGER_MS)
        configure_client(dealer, self.curve)
        dealer.connect(endpoints(self.broker).workers)
        self.poller.register(dealer, zmq.POLLIN)
        self.dealer, self.reconnect_at, self.heard = dealer, None, False
        self.liveness.on_message(now)  # give the broker a full liveness period to answer
        ready = self.ready()
        if self.outbox and not ready.busy:
            ready = dataclasses.replace(ready, busy=True)  # a result follows: not idle yet
        self.send(ready, now)
        pending, self.outbox = self.outbox, []
        for msg in pending:
            self.send(msg, now)
        self.flush()
        logger.info("connected to %s; sent Ready", self.broker)

    def disconnect(self, now: float, reason: str) -> None:
        """Drop the DEALER and schedule a reconnect after the back-off."""
        if self.dealer is None:
            return
        self.poller.unregister(self.dealer)
        self.dealer.close(linger=0)  # whatever is queued is for a broker that is gone
        self.dealer = None
        self.sending = []  # its results are in ``unconfirmed`` too
        self.outbox[:0], self.unconfirmed = self.unconfirmed, []  # resent after the next Ready
        delay_s = self.backoff.next_delay_s()
        self.reconnect_at = now + delay_s
        logger.warning("%s; reconnecting in %.2f s", reason, delay_s)
        if self.on_lost is not None:
            self.on_lost()

    def send(self, msg: Message, now: float) -> None:
        """Send a message with the turn's others (``flush``); results wait for the next
        connection if there is none."""
        if self.dealer is None:
            if isinstance(msg, Done | Failed):
                self.outbox.append(msg)
            return
        self.sending.append(encode(msg))
        if isinstance(msg, Done | Failed):
            self.unconfirmed.append(msg)
        self.liveness.on_sent(now)

    def flush(self) -> None:
        """Send what this turn said, several messages as one bundle."""
        if not self.sending or self.dealer is None:
            return
        messages, self.sending = self.sending, []
        for frames in pack(messages) if len(messages) > 1 else messages:
            try:
                self.dealer.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                logger.warning("broker not reachable; dropped a message")

    def receive(self, now: float) -> list[Message]:
        """Every message waiting (up to DRAIN_LIMIT); bad frames are logged and dropped."""
        messages: list[Message] = []
        for _ in range(DRAIN_LIMIT):
            if self.dealer is None:
                break
            try:
                frames = self.dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._heard(now)
            try:
                parts = messages_in(frames)
            except ProtocolError as exc:
                logger.warning("dropped a bad bundle from the broker: %s", exc)
                continue
            for part in parts:
                try:
                    msg = decode(part)
                except ProtocolError as exc:
                    logger.warning("dropped a bad message from the broker: %s", exc)
                    continue
                if not isinstance(msg, Bye | Error):
                    self.unconfirmed.clear()  # the broker knows this connection: results got there
                messages.append(msg)
        return messages

    def _heard(self, now: float) -> None:
        self.liveness.on_message(now)  # anything at all proves the broker is alive
        if not self.heard:
            self.heard = self.ever_heard = True
            self.backoff.reset()

    def tick(self, now: float) -> None:
        """Reconnect when due, give up on a silent broker, heartbeat when idle."""
        if self.dealer is None:
            if self.reconnect_at is not None and now >= self.reconnect_at:
                self.connect(now)
        elif self.liveness.expired(now):
            silent_s = now - self.liveness.last_heard
            self.disconnect(now, f"broker silent for {silent_s:.2f} s")
        elif self.liveness.due(now):
            self.send(Heartbeat(), now)

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do."""
        if self.dealer is None:
            return self.reconnect_at
        return self.liveness.next_deadline()

    def close(self) -> None:
        """Close the DEALER, letting queued messages (Bye, a last result) out for a while."""
        self.flush()
        if self.dealer is not None:
            self.poller.unregister(self.dealer)
            self.dealer.close(linger=LINGER_MS)
            self.dealer = None
