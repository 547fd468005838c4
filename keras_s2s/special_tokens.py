"""Ids and strings of the special tokens, fixed for every vocabulary in the package.

Padding is id 0 everywhere: models mask it out of attention, loss and metrics.
"""

PAD_ID = 0
UNK_ID = 1
START_ID = 2
END_ID = 3

PAD = "[PAD]"
UNK = "[UNK]"
START = "[START]"
END = "[END]"

#: Reserved tokens in id order; every vocabulary starts with these.
SPECIAL_TOKENS = (PAD, UNK, START, END)
