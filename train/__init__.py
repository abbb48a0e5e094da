"""scorecritic learning stage: transcriptor, separator, the three training steps, evaluation."""
