"""The bottom layer: the spec model and what every stage shares (keys, partitions, policies, names, records).

It imports nothing else of ours, so a change here never drags a reader through the layers above.
"""
