"""What designers and operators run: the ``make run`` launcher, the shell, the response check and
preview, validation, the story and NLU evaluation, the conversation tests, model training and the
Twilio and VAPI simulators' command lines. Nothing here is imported by the Rasa server in
production; the local parts they start come from :mod:`testkit`.
"""
