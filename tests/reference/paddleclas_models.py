"""The reference's backbones (PaddleClas's legendary ResNet/ResNet-vd, PP-LCNet, MobileNetV3)
rebuilt in PyTorch for the .pdparams tests, written from the reference model code's structure:
every module has the attribute name the reference gives it, so state_dict() names are
PaddleClas's structured parameter names (BatchNorm buffers aside, which Paddle calls _mean and
_variance). Only what inference needs: eval-mode forward, no feature taps.
"""
import torch
from torch import nn


def make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Act(nn.Module):
    def __init__(self, kind, slope=1 / 6):
        super().__init__()
        self.kind, self.slope = kind, slope

    def forward(self, x):
        if self.kind == "relu":
            return torch.relu(x)
        if self.kind == "hardswish":
            return x * torch.clamp(x + 3, 0, 6) / 6
        return torch.clamp(self.slope * x + 0.5, 0, 1)  # hardsigmoid


class ConvBNLayer(nn.Module):
    """conv (no bias) -> bn -> act; vd: a 2x2 ceil-mode average pool does the striding."""

    def __init__(self, cin, cout, k, stride=1, groups=1, act=None, vd=False):
        super().__init__()
        self.vd = vd
        if vd:
            self.avg_pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        self.conv = nn.Conv2d(cin, cout, k, 1 if vd else stride, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = Act(act) if act else None

    def forward(self, x):
        if self.vd:
            x = self.avg_pool(x)
        x = self.bn(self.conv(x))
        return self.act(x) if self.act else x


class BasicBlock(nn.Module):
    def __init__(self, cin, width, stride, shortcut, vd_short):
        super().__init__()
        self.conv0 = ConvBNLayer(cin, width, 3, stride, act="relu")
        self.conv1 = ConvBNLayer(width, width, 3)
        self.shortcut = shortcut
        if not shortcut:
            self.short = ConvBNLayer(cin, width, 1, stride, vd=vd_short)

    def forward(self, x):
        y = self.conv1(self.conv0(x))
        return torch.relu(y + (x if self.shortcut else self.short(x)))


class BottleneckBlock(nn.Module):
    def __init__(self, cin, width, stride, shortcut, vd_short):
        super().__init__()
        self.conv0 = ConvBNLayer(cin, width, 1, act="relu")
        self.conv1 = ConvBNLayer(width, width, 3, stride, act="relu")
        self.conv2 = ConvBNLayer(width, width * 4, 1)
        self.shortcut = shortcut
        if not shortcut:
            self.short = ConvBNLayer(cin, width * 4, 1, stride, vd=vd_short)

    def forward(self, x):
        y = self.conv2(self.conv1(self.conv0(x)))
        return torch.relu(y + (x if self.shortcut else self.short(x)))


class ResNet(nn.Module):
    DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}

    def __init__(self, depth, vd=False, class_num=1000):
        super().__init__()
        stem = [(3, 32, 3, 2), (32, 32, 3, 1), (32, 64, 3, 1)] if vd else [(3, 64, 7, 2)]
        self.stem = nn.Sequential(*[ConvBNLayer(i, o, k, s, act="relu") for i, o, k, s in stem])
        self.max_pool = nn.MaxPool2d(3, 2, 1)
        bottleneck = depth >= 50
        block = BottleneckBlock if bottleneck else BasicBlock
        blocks, cin = [], 64
        for stage, n in enumerate(self.DEPTHS[depth]):
            width = 64 * 2 ** stage
            for i in range(n):
                # the first block of every stage projects its shortcut; vd pools it (but the first)
                blocks.append(block(cin, width, 2 if i == 0 and stage > 0 else 1, i != 0, vd and stage > 0))
                cin = width * (4 if bottleneck else 1)
        self.blocks = nn.Sequential(*blocks)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, class_num)

    def forward(self, x):
        return self.fc(self.flatten(self.avg_pool(self.blocks(self.max_pool(self.stem(x))))))


class SEModule(nn.Module):
    def __init__(self, channel, slope, reduction=4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(channel, channel // reduction, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channel // reduction, channel, 1)
        self.hardsigmoid = Act("hardsigmoid", slope)

    def forward(self, x):
        return x * self.hardsigmoid(self.conv2(self.relu(self.conv1(self.avg_pool(x)))))


class ExpandHead(nn.Module):
    """avg_pool -> last_conv -> hardswish -> downscale-in-infer dropout (eval: * (1 - p)) -> fc."""

    def head(self, x, cin, class_expand, class_num, dropout):
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.last_conv = nn.Conv2d(cin, class_expand, 1, bias=False)
        self.hardswish = Act("hardswish")
        self.keep = 1 - dropout
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(class_expand, class_num)

    def run_head(self, x):
        x = self.hardswish(self.last_conv(self.avg_pool(x))) * self.keep
        return self.fc(self.flatten(x))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin, cout, k, stride, use_se):
        super().__init__()
        self.dw_conv = ConvBNLayer(cin, cin, k, stride, cin, "hardswish")
        self.se = SEModule(cin, 1 / 6) if use_se else None
        self.pw_conv = ConvBNLayer(cin, cout, 1, act="hardswish")

    def forward(self, x):
        x = self.dw_conv(x)
        return self.pw_conv(self.se(x) if self.se else x)


class PPLCNet(ExpandHead):
    CONFIG = {"blocks2": [[3, 16, 32, 1, False]],
              "blocks3": [[3, 32, 64, 2, False], [3, 64, 64, 1, False]],
              "blocks4": [[3, 64, 128, 2, False], [3, 128, 128, 1, False]],
              "blocks5": [[3, 128, 256, 2, False]] + [[5, 256, 256, 1, False]] * 5,
              "blocks6": [[5, 256, 512, 2, True], [5, 512, 512, 1, True]]}

    def __init__(self, scale, class_num=1000, class_expand=1280, dropout=0.2):
        super().__init__()
        self.conv1 = ConvBNLayer(3, make_divisible(16 * scale), 3, 2, act="hardswish")
        for name, config in self.CONFIG.items():
            setattr(self, name, nn.Sequential(*[
                DepthwiseSeparable(make_divisible(i * scale), make_divisible(o * scale), k, s, se)
                for k, i, o, s, se in config]))
        self.head(None, make_divisible(512 * scale), class_expand, class_num, dropout)

    def forward(self, x):
        x = self.conv1(x)
        for name in self.CONFIG:
            x = getattr(self, name)(x)
        return self.run_head(x)


class ResidualUnit(nn.Module):
    def __init__(self, cin, mid, cout, k, stride, use_se, act):
        super().__init__()
        self.if_shortcut = stride == 1 and cin == cout
        self.expand_conv = ConvBNLayer(cin, mid, 1, act=act)
        self.bottleneck_conv = ConvBNLayer(mid, mid, k, stride, mid, act)
        self.mid_se = SEModule(mid, 0.2) if use_se else None
        self.linear_conv = ConvBNLayer(mid, cout, 1)

    def forward(self, x):
        y = self.bottleneck_conv(self.expand_conv(x))
        if self.mid_se:
            y = self.mid_se(y)
        y = self.linear_conv(y)
        return x + y if self.if_shortcut else y


class MobileNetV3(ExpandHead):
    # k, exp, c, se, act, s
    LARGE = [[3, 16, 16, False, "relu", 1], [3, 64, 24, False, "relu", 2], [3, 72, 24, False, "relu", 1],
             [5, 72, 40, True, "relu", 2], [5, 120, 40, True, "relu", 1], [5, 120, 40, True, "relu", 1],
             [3, 240, 80, False, "hardswish", 2], [3, 200, 80, False, "hardswish", 1],
             [3, 184, 80, False, "hardswish", 1], [3, 184, 80, False, "hardswish", 1],
             [3, 480, 112, True, "hardswish", 1], [3, 672, 112, True, "hardswish", 1],
             [5, 672, 160, True, "hardswish", 2], [5, 960, 160, True, "hardswish", 1],
             [5, 960, 160, True, "hardswish", 1]]
    SMALL = [[3, 16, 16, True, "relu", 2], [3, 72, 24, False, "relu", 2], [3, 88, 24, False, "relu", 1],
             [5, 96, 40, True, "hardswish", 2], [5, 240, 40, True, "hardswish", 1],
             [5, 240, 40, True, "hardswish", 1], [5, 120, 48, True, "hardswish", 1],
             [5, 144, 48, True, "hardswish", 1], [5, 288, 96, True, "hardswish", 2],
             [5, 576, 96, True, "hardswish", 1], [5, 576, 96, True, "hardswish", 1]]

    def __init__(self, large, scale, class_num=1000, class_expand=1280, dropout=0.2):
        super().__init__()
        config, squeeze = (self.LARGE, 960) if large else (self.SMALL, 576)
        cin = make_divisible(16 * scale)
        self.conv = ConvBNLayer(3, cin, 3, 2, act="hardswish")
        units = []
        for k, exp, c, se, act, s in config:
            units.append(ResidualUnit(cin, make_divisible(scale * exp), make_divisible(scale * c), k, s, se, act))
            cin = make_divisible(scale * c)
        self.blocks = nn.Sequential(*units)
        self.last_second_conv = ConvBNLayer(cin, make_divisible(scale * squeeze), 1, act="hardswish")
        self.head(None, make_divisible(scale * squeeze), class_expand, class_num, dropout)

    def forward(self, x):
        return self.run_head(self.last_second_conv(self.blocks(self.conv(x))))


class Res2NetConvBN(nn.Module):
    """Res2Net-vd's ConvBNLayer: names _pool2d_avg (vd shortcuts), _conv, _batch_norm."""

    def __init__(self, cin, cout, k, stride=1, relu=False, vd=False):
        super().__init__()
        self.vd, self.relu = vd, relu
        if vd:
            self._pool2d_avg = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
        self._conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)
        self._batch_norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        if self.vd:
            x = self._pool2d_avg(x)
        x = self._batch_norm(self._conv(x))
        return torch.relu(x) if self.relu else x


class Res2NetBlock(nn.Module):
    def __init__(self, name, cin, cout, width, stride, scales, shortcut, if_first):
        super().__init__()
        self.stride, self.scales, self.shortcut = stride, scales, shortcut
        self.conv0 = Res2NetConvBN(cin, width, 1, relu=True)
        self.branches = []
        for s in range(scales - 1):
            conv = Res2NetConvBN(width // scales, width // scales, 3, stride, relu=True)
            self.add_module("%s_branch2b_%d" % (name, s + 1), conv)
            self.branches.append(conv)
        self.pool2d_avg = nn.AvgPool2d(3, stride, 1, count_include_pad=False)
        self.conv2 = Res2NetConvBN(width, cout, 1)
        if not shortcut:
            self.short = Res2NetConvBN(cin, cout, 1, vd=not if_first)

    def forward(self, x):
        xs = torch.chunk(self.conv0(x), self.scales, 1)
        ys = []
        for s, conv in enumerate(self.branches):
            ys.append(conv(xs[s] if s == 0 or self.stride == 2 else xs[s] + ys[-1]))
        ys.append(xs[-1] if self.stride == 1 else self.pool2d_avg(xs[-1]))
        y = self.conv2(torch.cat(ys, 1))
        return torch.relu(y + (x if self.shortcut else self.short(x)))


class Res2Net(nn.Module):
    DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 200: [3, 12, 48, 3]}

    def __init__(self, depth, width=26, scales=4, class_num=1000):
        super().__init__()
        self.conv1_1 = Res2NetConvBN(3, 32, 3, 2, relu=True)
        self.conv1_2 = Res2NetConvBN(32, 32, 3, 1, relu=True)
        self.conv1_3 = Res2NetConvBN(32, 64, 3, 1, relu=True)
        self.pool2d_max = nn.MaxPool2d(3, 2, 1)
        self.blocks = []
        cin = 64
        for stage, n in enumerate(self.DEPTHS[depth]):
            for i in range(n):
                if depth > 50 and stage == 2:
                    name = "res%d%s" % (stage + 2, "a" if i == 0 else "b%d" % i)
                else:
                    name = "res%d%s" % (stage + 2, chr(97 + i))
                block = Res2NetBlock(name, cin, 256 * 2 ** stage, width * scales * 2 ** stage,
                                     2 if i == 0 and stage > 0 else 1, scales, i != 0, stage == i == 0)
                self.add_module("bb_%d_%d" % (stage, i), block)
                self.blocks.append(block)
                cin = 256 * 2 ** stage
        self.pool2d_avg = nn.AdaptiveAvgPool2d(1)
        self.out = nn.Linear(cin, class_num)

    def forward(self, x):
        x = self.pool2d_max(self.conv1_3(self.conv1_2(self.conv1_1(x))))
        for block in self.blocks:
            x = block(x)
        return self.out(torch.flatten(self.pool2d_avg(x), 1))


class HGConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.use_act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.use_act else x


class ESEModule(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(self.avg_pool(x)))


class HGBlock(nn.Module):
    def __init__(self, cin, mid, cout, layer_num, identity):
        super().__init__()
        self.identity = identity
        self.layers = nn.ModuleList([HGConvBN(cin if i == 0 else mid, mid, 3, 1) for i in range(layer_num)])
        self.aggregation_conv = HGConvBN(cin + layer_num * mid, cout, 1, 1)
        self.att = ESEModule(cout)

    def forward(self, x):
        outputs = [x]
        for layer in self.layers:
            outputs.append(layer(outputs[-1]))
        y = self.att(self.aggregation_conv(torch.cat(outputs, 1)))
        return y + x if self.identity else y


class HGStage(nn.Module):
    def __init__(self, cin, mid, cout, blocks, layer_num, downsample):
        super().__init__()
        self.downsample = HGConvBN(cin, cin, 3, 2, cin, act=False) if downsample else None
        self.blocks = nn.Sequential(*[HGBlock(cin if b == 0 else cout, mid, cout, layer_num, b > 0) for b in range(blocks)])

    def forward(self, x):
        return self.blocks(self.downsample(x) if self.downsample is not None else x)


class PPHGNet(nn.Module):
    CONFIGS = {  # stem, layer_num, stages (in, mid, out, blocks, downsample), dropout
        "tiny": ([48, 48, 96], 5, [[96, 96, 224, 1, False], [224, 128, 448, 1, True], [448, 160, 512, 2, True],
                                   [512, 192, 768, 1, True]], 0.0),
        "small": ([64, 64, 128], 6, [[128, 128, 256, 1, False], [256, 160, 512, 1, True], [512, 192, 768, 2, True],
                                     [768, 224, 1024, 1, True]], 0.0),
        "base": ([96, 96, 160], 7, [[160, 192, 320, 1, False], [320, 224, 640, 2, True], [640, 256, 960, 3, True],
                                    [960, 288, 1280, 2, True]], 0.2),
    }

    def __init__(self, size, class_num=1000, class_expand=2048):
        super().__init__()
        stem, layer_num, stages, dropout = self.CONFIGS[size]
        channels = [3] + stem
        self.stem = nn.Sequential(*[HGConvBN(channels[i], channels[i + 1], 3, 2 if i == 0 else 1) for i in range(len(stem))])
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.ModuleList([HGStage(i, m, o, b, layer_num, d) for i, m, o, b, d in stages])
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.last_conv = nn.Conv2d(stages[-1][2], class_expand, 1, bias=False)
        self.keep = 1 - dropout
        self.fc = nn.Linear(class_expand, class_num)

    def forward(self, x):
        x = self.pool(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        x = torch.relu(self.last_conv(self.avg_pool(x))) * self.keep
        return self.fc(torch.flatten(x, 1))
