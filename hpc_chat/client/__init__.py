"""The CLI's client of a running ``hpc-chat serve``: finding it, checking who listens, asking
it (:mod:`.http`), and where a server records itself and its key (:mod:`.files`)."""
