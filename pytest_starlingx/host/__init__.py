"""The machine labs run on: preparing it (``setup``), checking it (``doctor``), and what it can
hold (``capacity``)."""
