"""How customers' words are read before and after the classifier: text normalisation for the
tokenizer (shorthand, fillers, spelling) and the confirmation gate for intents that act."""
