"""Evaluation: prompt sets, the FollowEval-style instruction-following suite and the speed/tau benchmark.

Sub-modules are imported explicitly (`from coral_hf.eval.followeval import load_followeval`) so that importing this
package stays cheap.
"""
