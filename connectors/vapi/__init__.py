"""VAPI voice channel: VAPI's custom-LLM endpoint and its server messages.

VAPI does speech-to-text, text-to-speech and telephony; it asks this server what the assistant
says through its *custom LLM* interface (an OpenAI chat-completions client pointed at
``/webhooks/vapi``) and reports what happens on the call through *server messages*
(``/webhooks/vapi/events``). Rasa has no VAPI channel; this one is built on the same contract as
every connector here (identity, ``run_turn``, rendering) plus what a voice line needs: streaming,
duplicate and superseded requests, barge-in, and call control.

Where to look:

- ``auth.py``: who may call (server secret, custom-LLM key, HMAC signature).
- ``wire.py``: the wire format: VAPI's payloads as typed models, their parsing, the OpenAI SSE
  chunks we answer with. No Sanic, no Rasa.
- How a reply sounds is ``omnichannel/rendering/voice.py``; the greetings and the assistant's
  name are responses in ``domain.yml`` (``greeting.py`` renders them).
- ``hearing.py``: what the caller said and heard, from VAPI's history (pure): the utterance to
  answer, superseding requests, barge-in.
- ``voice_turn.py``: one voice turn and its states (claimed, running, superseded, finished).
- ``state.py``: channel state: the call's state and the turns' answers in Redis.
- ``turns.py``: a turn through Rasa, once: claims, duplicates, takeovers, supersedes, reverts.
- ``call_control.py``: hanging up and transferring through VAPI's Live Call Control.
- ``callers.py``: who is calling, and their conversation.
- ``server_messages.py`` (with ``tools.py``): assistant-request, end-of-call-report, tool calls…
- ``stream.py``: a turn's speech as the SSE response; ``latency.py``: its timings as metrics.
- ``channel.py``: the Rasa input/output channels, their credentials.yml options and the routes.
"""
