set terminal pngcairo size 800,480 noenhanced
set output 'docs/eval/weights.png'
set grid
set key bottom left
set ylabel 'top-1 agreement with f32'
set y2label 'mean KL vs f32 (nats)'
set logscale y2
set y2tics
set xlabel 'weights'
set offsets 0.3, 0.3, 0, 0
plot 'docs/eval/weights.dat' using 0:2:xtic(1) with linespoints title 'top-1 agreement', 'docs/eval/weights.dat' using 0:($3 > 0 ? $3 : 1e-9) axes x1y2 with linespoints title 'mean KL'
