set terminal pngcairo size 900,560 noenhanced
set key outside right
set grid
set output 'docs/eval/top1_vs_budget.png'
set xlabel 'budget ratio'
set ylabel 'top-1 agreement with the full cache'
unset logscale y
plot 'docs/eval/top1_vs_budget.dat' using 1:2 with linespoints title 'local', 'docs/eval/top1_vs_budget.dat' using 1:3 with linespoints title 'streaming_llm', 'docs/eval/top1_vs_budget.dat' using 1:4 with linespoints title 'h2o', 'docs/eval/top1_vs_budget.dat' using 1:5 with linespoints title 'tova', 'docs/eval/top1_vs_budget.dat' using 1:6 with linespoints title 'a2sf(0.1)', 'docs/eval/top1_vs_budget.dat' using 1:7 with linespoints title 'a2sf(0.3)', 'docs/eval/top1_vs_budget.dat' using 1:8 with linespoints title 'a2sf(0.5)', 'docs/eval/top1_vs_budget.dat' using 1:9 with linespoints title 'a2sf(0.9)', 'docs/eval/top1_vs_budget.dat' using 1:10 with linespoints title 'a2sf(0.3)+recent'
set output 'docs/eval/top1_vs_alpha.png'
set xlabel 'alpha (a2sf, no recent window)'
plot 'docs/eval/top1_vs_alpha.dat' using 1:2 with linespoints title 'budget 0.1', 'docs/eval/top1_vs_alpha.dat' using 1:3 with linespoints title 'budget 0.2', 'docs/eval/top1_vs_alpha.dat' using 1:4 with linespoints title 'budget 0.3', 'docs/eval/top1_vs_alpha.dat' using 1:5 with linespoints title 'budget 0.5', 'docs/eval/top1_vs_alpha.dat' using 1:6 with linespoints title 'budget 0.8'
set output 'docs/eval/kl_vs_budget.png'
set xlabel 'budget ratio'
set ylabel 'mean KL(full || policy), nats'
set logscale y
plot 'docs/eval/kl_vs_budget.dat' using 1:2 with linespoints title 'local', 'docs/eval/kl_vs_budget.dat' using 1:3 with linespoints title 'streaming_llm', 'docs/eval/kl_vs_budget.dat' using 1:4 with linespoints title 'h2o', 'docs/eval/kl_vs_budget.dat' using 1:5 with linespoints title 'tova', 'docs/eval/kl_vs_budget.dat' using 1:6 with linespoints title 'a2sf(0.1)', 'docs/eval/kl_vs_budget.dat' using 1:7 with linespoints title 'a2sf(0.3)', 'docs/eval/kl_vs_budget.dat' using 1:8 with linespoints title 'a2sf(0.5)', 'docs/eval/kl_vs_budget.dat' using 1:9 with linespoints title 'a2sf(0.9)', 'docs/eval/kl_vs_budget.dat' using 1:10 with linespoints title 'a2sf(0.3)+recent'
set output 'docs/eval/kl_vs_alpha.png'
set xlabel 'alpha (a2sf, no recent window)'
plot 'docs/eval/kl_vs_alpha.dat' using 1:2 with linespoints title 'budget 0.1', 'docs/eval/kl_vs_alpha.dat' using 1:3 with linespoints title 'budget 0.2', 'docs/eval/kl_vs_alpha.dat' using 1:4 with linespoints title 'budget 0.3', 'docs/eval/kl_vs_alpha.dat' using 1:5 with linespoints title 'budget 0.5', 'docs/eval/kl_vs_alpha.dat' using 1:6 with linespoints title 'budget 0.8'
set output 'docs/eval/cosine_vs_budget.png'
set xlabel 'budget ratio'
set ylabel 'mean cosine of attention outputs'
unset logscale y
plot 'docs/eval/cosine_vs_budget.dat' using 1:2 with linespoints title 'local', 'docs/eval/cosine_vs_budget.dat' using 1:3 with linespoints title 'streaming_llm', 'docs/eval/cosine_vs_budget.dat' using 1:4 with linespoints title 'h2o', 'docs/eval/cosine_vs_budget.dat' using 1:5 with linespoints title 'tova', 'docs/eval/cosine_vs_budget.dat' using 1:6 with linespoints title 'a2sf(0.1)', 'docs/eval/cosine_vs_budget.dat' using 1:7 with linespoints title 'a2sf(0.3)', 'docs/eval/cosine_vs_budget.dat' using 1:8 with linespoints title 'a2sf(0.5)', 'docs/eval/cosine_vs_budget.dat' using 1:9 with linespoints title 'a2sf(0.9)', 'docs/eval/cosine_vs_budget.dat' using 1:10 with linespoints title 'a2sf(0.3)+recent'
set output 'docs/eval/cosine_vs_alpha.png'
set xlabel 'alpha (a2sf, no recent window)'
plot 'docs/eval/cosine_vs_alpha.dat' using 1:2 with linespoints title 'budget 0.1', 'docs/eval/cosine_vs_alpha.dat' using 1:3 with linespoints title 'budget 0.2', 'docs/eval/cosine_vs_alpha.dat' using 1:4 with linespoints title 'budget 0.3', 'docs/eval/cosine_vs_alpha.dat' using 1:5 with linespoints title 'budget 0.5', 'docs/eval/cosine_vs_alpha.dat' using 1:6 with linespoints title 'budget 0.8'
