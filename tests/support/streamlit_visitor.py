"""A visitor of a Streamlit page without a browser: its websocket, spoken with Streamlit's
own protobuf classes, as the page's JavaScript speaks it.

Each run sends the BackMsg that makes the script run (with the widget values a
visitor typed) and reads every ForwardMsg the server sends until the run ends,
keeping their bytes: what any browser, or anything posing as one, receives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState, WidgetStates
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

STREAM_PATH = "/_stcore/stream"
RUN_TIMEOUT_S = 60.0


@dataclass
class Run:
    """What one script run sent to the visitor."""

    messages: list[ForwardMsg] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)

    def contains(self, text: str) -> bool:
        """Whether `text` is anywhere in what the server sent (UTF-8, as protobuf carries it)."""
        needle = text.encode()
        return any(needle in frame for frame in self.raw)

    def text_inputs(self) -> dict[str, str]:
        """Label -> widget id of the text inputs the run drew."""
        found = {}
        for message in self.messages:
            element = message.delta.new_element
            if message.HasField("delta") and element.WhichOneof("type") == "text_input":
                found[element.text_input.label] = element.text_input.id
        return found

    def alerts(self) -> list[str]:
        """The bodies of st.error / st.warning / st.info boxes."""
        return [
            m.delta.new_element.alert.body
            for m in self.messages
            if m.HasField("delta") and m.delta.new_element.WhichOneof("type") == "alert"
        ]


class Visitor:
    def __init__(self, page_url: str) -> None:
        ws_url = "ws" + page_url.removeprefix("http") + STREAM_PATH
        # proxy=None: straight to the local page, whatever the environment says.
        self.ws: ClientConnection = connect(
            ws_url, subprotocols=[Subprotocol("streamlit")], max_size=None, proxy=None
        )
        self.runs: list[Run] = []

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> Visitor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def run(self, text_inputs: dict[str, str] | None = None) -> Run:
        """Run the page with these text inputs (label -> value, of fields a first run drew)
        typed; what the server sent back."""
        ids = self.runs[-1].text_inputs() if self.runs else {}
        states = [
            WidgetState(id=ids[label], string_value=value)
            for label, value in (text_inputs or {}).items()
        ]
        request = BackMsg(
            rerun_script=ClientState(
                query_string="", page_script_hash="", widget_states=WidgetStates(widgets=states)
            )
        )
        self.ws.send(request.SerializeToString())
        run = self._read_run()
        self.runs.append(run)
        return run

    def _read_run(self) -> Run:
        run = Run()
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            frame = self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            assert isinstance(frame, bytes), "Streamlit speaks binary protobufs only"
            message = ForwardMsg()
            message.ParseFromString(frame)
            # A reference stands for a message the browser said it had cached: this
            # visitor says it has none, so every message must come whole.
            assert not message.HasField("ref_hash"), "a message came as a cache reference"
            run.raw.append(frame)
            run.messages.append(message)
            if message.WhichOneof("type") == "script_finished":
                assert message.script_finished != ForwardMsg.FINISHED_WITH_COMPILE_ERROR
                if message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                    return run
