// The project's requantization core: per channel, y = clip((x * SCALE + BIAS) >>> SHIFT) on
// integers, the form finn_demo/hw/requant.py proves equal to a threshold layer on every input.
//
// Unlike finn-rtllib's requant core, it takes its parameters as the integers they are (no
// float32 decomposition), with as many scale bits as the layer needs (S_WIDTH, signed) and one
// right shift for the layer, and reads an unsigned input as unsigned (zero-extended).
// Parameters arrive as one word per input word from FINN's memstream (s_params): PE lanes of
// {BIAS[B_WIDTH], SCALE[S_WIDTH]}, lane 0 in the low bits, the same layout FINN packs data in;
// stored without the trailing zero bits every channel's scale (S_SHIFT) and bias (B_SHIFT)
// has, which the core puts back: SCALE = stored << S_SHIFT, BIAS = stored << B_SHIFT.
// The pipeline (4 register stages) advances whenever its last stage is empty or read; an input
// word is taken together with its parameter word, so the two streams stay in step.
module requant_exact #(
	int unsigned  K,           // input bits
	bit           SIGNED_IN,   // 1: input read as signed, 0: as unsigned
	int unsigned  N,           // output bits
	bit           SIGNED_OUT,  // 1: clip to [-2^(N-1), 2^(N-1)-1], 0: to [0, 2^N-1]
	int unsigned  PE,          // channels a word
	int unsigned  S_WIDTH,     // bits of the signed scale, as stored
	int unsigned  S_SHIFT,     // the scale's dropped trailing zero bits
	int unsigned  B_WIDTH,     // bits of the signed bias (the 1/2 of rounding included), as stored
	int unsigned  B_SHIFT,     // the bias's dropped trailing zero bits
	int unsigned  SHIFT,       // the layer's right shift

	localparam int unsigned  LANE = S_WIDTH + B_WIDTH,
	localparam int unsigned  IN_WIDTH = (PE*K + 7)/8 * 8,
	localparam int unsigned  OUT_WIDTH = (PE*N + 7)/8 * 8,
	localparam int unsigned  PARAMS_WIDTH = (PE*LANE + 7)/8 * 8
)(
	input	logic  clk,
	input	logic  rst,

	output	logic  s_axis_tready,
	input	logic  s_axis_tvalid,
	input	logic [IN_WIDTH-1:0]  s_axis_tdata,

	output	logic  s_params_tready,
	input	logic  s_params_tvalid,
	input	logic [PARAMS_WIDTH-1:0]  s_params_tdata,

	input	logic  m_axis_tready,
	output	logic  m_axis_tvalid,
	output	logic [OUT_WIDTH-1:0]  m_axis_tdata
);
	localparam int unsigned  X = K + 1;  // the input as a signed number, whatever its sign
	localparam int unsigned  PRODUCT = X + S_WIDTH;
	localparam int unsigned  SUM = (PRODUCT + S_SHIFT > B_WIDTH + B_SHIFT?
	                                PRODUCT + S_SHIFT : B_WIDTH + B_SHIFT) + 1;
	localparam int unsigned  STAGES = 4;
	localparam logic signed [SUM-1:0]  LO = SIGNED_OUT? -(64'sd1 << (N-1)) : 0;
	localparam logic signed [SUM-1:0]  HI = SIGNED_OUT? (64'sd1 << (N-1)) - 1 : (64'sd1 << N) - 1;

	logic [STAGES-1:0]  Vld = '0;
	uwire  en = m_axis_tready || !Vld[STAGES-1];  // the pipeline moves unless its output waits
	uwire  take = en && s_axis_tvalid && s_params_tvalid;
	assign	s_axis_tready = en && s_params_tvalid;
	assign	s_params_tready = en && s_axis_tvalid;
	always_ff @(posedge clk) begin
		if(rst)  Vld <= '0;
		else if(en)  Vld <= { Vld[STAGES-2:0], take };
	end
	assign	m_axis_tvalid = Vld[STAGES-1];

	for(genvar  pe = 0; pe < PE; pe++) begin : genLane
		uwire [K-1:0]  raw = s_axis_tdata[pe*K +: K];
		logic signed [X-1:0]  X1;
		logic signed [S_WIDTH-1:0]  S1;
		logic signed [B_WIDTH-1:0]  B1, B2;
		logic signed [PRODUCT-1:0]  M2;
		logic signed [SUM-1:0]  P3;
		logic [N-1:0]  Y4;
		uwire signed [SUM-1:0]  q = P3 >>> SHIFT;
		always_ff @(posedge clk) begin
			if(en) begin
				X1 <= $signed({ SIGNED_IN? raw[K-1] : 1'b0, raw });
				S1 <= $signed(s_params_tdata[pe*LANE +: S_WIDTH]);
				B1 <= $signed(s_params_tdata[pe*LANE + S_WIDTH +: B_WIDTH]);
				M2 <= X1 * S1;
				B2 <= B1;
				P3 <= (SUM'(M2) <<< S_SHIFT) + (SUM'(B2) <<< B_SHIFT);
				Y4 <= q < LO? LO[N-1:0] : q > HI? HI[N-1:0] : q[N-1:0];
			end
		end
		assign	m_axis_tdata[pe*N +: N] = Y4;
	end : genLane
	if(OUT_WIDTH > PE*N) begin : genPad
		assign	m_axis_tdata[OUT_WIDTH-1:PE*N] = '0;
	end : genPad

endmodule : requant_exact
