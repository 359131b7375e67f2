"""The channel-independent core of rasa-omnichannel.

Everything the channels share, exactly once: settings (:mod:`~omnichannel.settings`), the Redis
client and script runner (:mod:`~omnichannel.redis_client`), who is talking
(:mod:`~omnichannel.identity`), the channel vocabulary (:mod:`~omnichannel.channels`), how a reply
looks and sounds per channel (:mod:`~omnichannel.rendering`), SMS sending
(:mod:`~omnichannel.sms_sender`), connector options (:mod:`~omnichannel.options`), background
tasks (:mod:`~omnichannel.tasks`) and the demo's order backend (:mod:`~omnichannel.orders`).

Layers import downwards only: this package never imports ``rasa`` or ``rasa_sdk``; the Rasa
plug-ins (``connectors/``) and the custom actions (``actions/``) import it.
"""
