"""torchao 0.13 (imported by torchtune 0.6.1): silence its "Detected no triton" warning.

`torchao.kernel.intmm` logs it on every import where triton is missing (every CPU machine),
though nothing we run uses its triton kernels. Only that message of that logger is dropped;
every other warning of torchao still shows.
"""

import logging

LOGGER = "torchao.kernel.intmm"


def _keep(record: logging.LogRecord) -> bool:
    return "Detected no triton" not in record.getMessage()


def silence_no_triton_warning() -> None:
    logger = logging.getLogger(LOGGER)
    if _keep not in logger.filters:
        logger.addFilter(_keep)
