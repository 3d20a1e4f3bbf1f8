"""FINN's hardware flow, the build finn_build.py runs (needs FINN installed).

steps (FINN's transformations per step), finn_builder (FINN's builder where no Xilinx tools are),
cache (the steps cache behind --reuse), boards, requant_rtl (FINN's Requant_rtl on the project's
core in rtl/), resources, fit, alternatives, hw_checks, requant, verilator, and build (the Build
with its steps, run by FINN's builder)."""
