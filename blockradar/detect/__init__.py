"""Detection: categories -> verdicts. Sliding windows per scope key (``windows``), thresholds that
judge them (``thresholds``), and the pipeline every outcome takes through them (``pipeline``)."""
