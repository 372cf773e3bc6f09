"""The original design's ``core`` import paths, kept working as thin re-exports.

Nothing in hpc_chat imports these modules; the code lives where docs/architecture.md says.
``hpc_chat.core`` and ``hpc_chat.apps`` are the only two packages of re-exports, and the
import-linter contract keeps them above everything else.
"""
