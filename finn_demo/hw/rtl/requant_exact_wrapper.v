// FINN's interface (in0_V, s_params_V, out0_V; FINN's memstream feeds s_params_V) around the
// project's requant_exact core; finn_demo/hw/requant.py fills in the $NAME$ fields.
module $TOP_MODULE_NAME$ (
    (* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF in0_V:s_params_V:out0_V, ASSOCIATED_RESET ap_rst_n" *)
    (* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 ap_clk CLK" *)
    input  ap_clk,
    (* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)
    input  ap_rst_n,
    output in0_V_TREADY,
    input  in0_V_TVALID,
    input  [$IN_WIDTH$-1:0] in0_V_TDATA,
    output s_params_V_TREADY,
    input  s_params_V_TVALID,
    input  [$PARAMS_WIDTH$-1:0] s_params_V_TDATA,
    input  out0_V_TREADY,
    output out0_V_TVALID,
    output [$OUT_WIDTH$-1:0] out0_V_TDATA
);
    requant_exact #(
        .K($K$), .SIGNED_IN($SIGNED_IN$), .N($N$), .SIGNED_OUT($SIGNED_OUT$), .PE($PE$),
        .S_WIDTH($S_WIDTH$), .S_SHIFT($S_SHIFT$), .B_WIDTH($B_WIDTH$), .B_SHIFT($B_SHIFT$),
        .SHIFT($SHIFT$)
    ) core (
        .clk(ap_clk), .rst(!ap_rst_n),
        .s_axis_tready(in0_V_TREADY), .s_axis_tvalid(in0_V_TVALID), .s_axis_tdata(in0_V_TDATA),
        .s_params_tready(s_params_V_TREADY), .s_params_tvalid(s_params_V_TVALID),
        .s_params_tdata(s_params_V_TDATA),
        .m_axis_tready(out0_V_TREADY), .m_axis_tvalid(out0_V_TVALID), .m_axis_tdata(out0_V_TDATA)
    );
endmodule
