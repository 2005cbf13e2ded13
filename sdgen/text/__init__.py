"""The text stage: CLIP tokenization (:mod:`.tokenizer`) and the ``Conditioning`` value
the U-Net is guided by (:mod:`.conditioning`)."""
